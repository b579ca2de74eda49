"""The scripts under scripts/ that run in this Blender (bpy), imported as modules: the demo's Cycles settings
(nothing is rendered here)."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"lw_test_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_still_after_the_fast_loop_frames_denoises_with_albedo_and_normal(clean_scene):
    demo = _script("demo")

    def denoising():  # read afresh: use_cycles enables the Cycles add-on, which registers its settings again
        c = clean_scene.cycles
        return c.denoising_quality, c.denoising_input_passes, c.denoising_prefilter

    demo.use_cycles(clean_scene, 1, 50, denoise="FAST")  # the loop's frames
    assert denoising() == ("FAST", "RGB", "NONE")
    demo.use_cycles(clean_scene, 1, 50)  # then the still, in the same scene
    assert denoising() == ("HIGH", "RGB_ALBEDO_NORMAL", "ACCURATE")
