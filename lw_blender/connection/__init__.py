"""The backend connection: ``client`` (HTTP, stdlib only), ``process`` (the local ``lw serve`` child, no bpy) and
``jobs`` (the job API every operator and flow uses; bpy, main thread)."""
