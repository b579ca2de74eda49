# LivingWorld: `make demo` runs the main job, `make test` the default test suite.
# Both create whatever environment they need that is missing first (the demo runs on bpy 5.3 only; the tests on
# 5.3 and 5.2), and are safe to run again.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# First interpreter that really is the wanted version (pyenv shims exist even when that version is not selected).
find_python = $(shell for p in python$(1) $$HOME/.pyenv/versions/$(1)*/bin/python3 /usr/bin/python$(1) /usr/local/bin/python$(1); do \
  $$p -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "$(1)".split("."))))' >/dev/null 2>&1 && { command -v $$p; break; }; done)
ifndef PY311
PY311 := $(call find_python,3.11)
endif
ifndef PY313
PY313 := $(call find_python,3.13)
endif
VENV := .venv
# The Blender suite runs twice: on Blender 5.3 (native splats) and on 5.2 LTS (the quad display of 4.2-5.2).
BVENV := .venv-blender
BPY_VERSION := 5.3.0
BVENV52 := .venv-blender52
BPY52_VERSION := 5.2.3

help:
	@echo "make demo   - create environments if missing, run the image -> living world demo into out/"
	@echo "make test   - create environments if missing, run the default test suite (CPU, no GPU)"
	@echo "make gpu    - on an NVIDIA machine: the [gpu] extra (gsplat 1.5.3) into .venv/, its kernels built, lw doctor"
	@echo "make test-slow, make lint, make zip, make clean-env"

$(VENV)/.installed: pyproject.toml
	@test -n "$(PY311)" || { echo "error: Python 3.11 not found; set PY311=/path/to/python3.11"; exit 1; }
	@echo "==> backend environment $(VENV)/ (Python 3.11 from $(PY311), torch==2.13.0 CPU build)"
	@test -x $(VENV)/bin/python || $(PY311) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --upgrade pip
	@$(VENV)/bin/python -m pip install -q -e '.[test]'
	@touch $@

# $(call bpy_env,FOLDER,VERSION): a Python 3.13 environment with the bpy wheel VERSION (the stamp names the version,
# so an environment left at another version is upgraded in place).
define bpy_env
$(1)/.installed-$(2):
	@test -n "$(PY313)" || { echo "error: Python 3.13 not found (bpy $(2) needs it); set PY313=..."; exit 1; }
	@echo "==> Blender environment $(1)/ (bpy==$(2) on Python 3.13 from $(PY313))"
	@test -x $(1)/bin/python || $(PY313) -m venv $(1)
	@$(1)/bin/python -m pip install -q --upgrade pip
	@$(1)/bin/python -m pip install -q bpy==$(2) pytest
	@touch $$@
endef
$(eval $(call bpy_env,$(BVENV),$(BPY_VERSION)))
$(eval $(call bpy_env,$(BVENV52),$(BPY52_VERSION)))
BENVS := $(BVENV)/.installed-$(BPY_VERSION) $(BVENV52)/.installed-$(BPY52_VERSION)

envs: $(VENV)/.installed $(BENVS)
	@echo "==> environments ready"

demo: $(VENV)/.installed $(BVENV)/.installed-$(BPY_VERSION)
	@echo "==> demo: headless Blender drives the backend; results go to out/"
	@$(BVENV)/bin/python scripts/demo.py --backend-python $(VENV)/bin/python --out out

test: envs
	@echo "==> backend tests (CPU, two worker processes)"
	@$(VENV)/bin/python -m pytest -q -n 2 tests/backend
	@echo "==> Blender add-on tests on bpy $(BPY_VERSION): native splats (installed extension zip, real backend)"
	@$(BVENV)/bin/python -m pytest -q tests/blender -p no:cacheprovider
	@echo "==> Blender add-on tests on bpy $(BPY52_VERSION): the quad display of Blender 4.2-5.2"
	@$(BVENV52)/bin/python -m pytest -q tests/blender -p no:cacheprovider

# GPU set-up in one command: a CUDA build of torch (PyPI's default on Linux x86-64), the pinned gsplat, its CUDA
# kernels built once for the cards present (cached by torch under ~/.cache/torch_extensions), then the report.
gpu: $(VENV)/.installed
	@$(VENV)/bin/python -c 'import sys, torch; sys.exit(0 if torch.version.cuda else "error: $(VENV) has a CPU-only torch; install the CUDA build of torch==2.13.0 for your driver (https://pytorch.org/get-started/locally/) into $(VENV), then run make gpu again")'
	@echo "==> [gpu] extra into $(VENV)/ (gsplat 1.5.3, ninja)"
	@$(VENV)/bin/python -m pip install -q -e '.[gpu,test]'
	@echo "==> building gsplat's CUDA kernels for this machine's GPUs (about 1.5 min on 16 cores, once)"
	@TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-$$($(VENV)/bin/python -c 'import torch; print(";".join(sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})))')}" \
	  MAX_JOBS="$${MAX_JOBS:-$$(nproc)}" $(VENV)/bin/lw doctor --build

test-slow: $(VENV)/.installed
	@$(VENV)/bin/python -m pytest -q tests/backend -m slow

lint: $(VENV)/.installed
	@$(VENV)/bin/ruff check .

zip: $(BVENV)/.installed-$(BPY_VERSION)
	@mkdir -p dist
	@$(BVENV)/bin/python scripts/build_extension.py --out dist

clean-env:
	rm -rf $(VENV) $(BVENV) $(BVENV52)

.PHONY: help envs demo test test-slow lint zip clean-env gpu
