"""Video prediction: the given frames are pre-cached as known patches, the model continues them.

NUWA-Infinity has image animation from one frame; this task takes several, so motion already seen
in them is part of the context (up to the model's frame extent).
"""
from __future__ import annotations

from pydantic import Field

from streamgen import hookimpl
from streamgen.engine.adc import Plan
from streamgen.errors import bad
from streamgen.plugins.task import Given, Job, Task, TaskEnv, TaskRequest


class PredictRequest(TaskRequest):
    images: list = Field(min_length=1, description="the given frames, oldest first: paths or uint8 arrays")
    frames: int | None = Field(16, ge=1, description="frames in the output, the given ones included")
    order: str = Field("omega", description="ADC order inside each generated frame")
    height: int | None = Field(None, gt=0, description="defaults to the given frames' height")
    width: int | None = Field(None, gt=0, description="defaults to the given frames' width")


class Predict(Task):
    name = "predict"
    Request = PredictRequest
    output = "video"
    summary = "video prediction: continue a video from several given frames"

    def job(self, req: PredictRequest, env: TaskEnv) -> Job:
        images = [env.load_image(im, f"images[{i}]") for i, im in enumerate(req.images)]
        h, w = images[0].shape[:2]
        for i, im in enumerate(images):
            if im.shape[:2] != (h, w):
                raise bad(f"images[{i}]", f"must be {h}x{w} px like images[0]", im.shape[:2])
        if (req.height or h, req.width or w) != (h, w):
            raise bad("images", f"must be {req.height or h}x{req.width or w} px, the requested size", (h, w))
        if req.frames is not None and req.frames < len(images):
            raise bad("frames", f"must be at least the {len(images)} given frames", req.frames)
        rows, cols = env.grid(h, w)
        plan = Plan.basic(req.order, rows, cols, req.frames, env.extent(req.extent),
                          known_frames=len(images))
        known = {}
        for f, im in enumerate(images):
            known.update(env.known_patches(env.encode(im), frame=f))
        return Job(plan, "video", known=known, given=[Given(f, im) for f, im in enumerate(images)])


@hookimpl
def streamgen_register_tasks(registry) -> None:
    registry.add("predict", Predict())
