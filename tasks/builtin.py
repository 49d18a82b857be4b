"""The five tasks of NUWA-Infinity, registered through the same entry-point path as any plugin.

uig: unconditional image of any size; t2i: text to image of any size; io: image outpainting;
ia: image animation (the input image is frame 0 and guides the PG-VQGAN for frame 1); t2v: text to
video of any length (frame 0 decoded by the VQGAN, the rest by the PG-VQGAN).
"""
from __future__ import annotations

from pydantic import Field, field_validator

from streamgen.engine.adc import EndlessPlan, Plan, check_order
from streamgen.errors import bad
from streamgen.plugins.hookspecs import hookimpl
from streamgen.plugins.task import (Given, ImageInputMixin, Job, PromptMixin, Task, TaskEnv, TaskRequest,
                                    VideoMixin, check_prompt)


class OrderMixin(TaskRequest):
    order: str = Field("omega", description="ADC order inside each frame; omega keeps wide canvases cheap")

    def plan(self, env: TaskEnv, frames: int | None, known_frames: int = 0) -> Plan:
        check_order(self.order)
        rows, cols = env.grid(self.height, self.width)
        return Plan.basic(self.order, rows, cols, frames, env.extent(self.extent), known_frames)


class CanvasMixin(OrderMixin):
    endless: bool = Field(False, description="a canvas with no right edge, drawn column by column (omega) "
                          "for as long as it is read: taken strip by strip (`Engine.strips`, a tile folder, "
                          "a --scroll video); `width` is not given")

    def plan(self, env: TaskEnv, frames: int | None, known_frames: int = 0) -> Plan:
        if not self.endless:
            return super().plan(env, frames, known_frames)
        if check_order(self.order) != "omega":
            raise bad("order", "must be omega (columns from the left) for an endless canvas", self.order)
        if "width" in self.model_fields_set:
            raise bad("width", "must not be given for an endless canvas (it has no width)", self.width)
        rows, _ = env.grid(self.height, env.patch_pixels[1])
        return EndlessPlan(rows, env.extent(self.extent))


class UIGRequest(CanvasMixin):
    pass


class T2IRequest(CanvasMixin, PromptMixin):
    pass


class T2VRequest(OrderMixin, VideoMixin, PromptMixin):
    prompts: dict[int, str] = Field(default_factory=dict, description="a storyboard: the prompt from each "
                                    "of these frames on, e.g. {\"64\": \"the same hills at night\"}; "
                                    "`prompt` holds until the first of them")

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: dict[int, str]) -> dict[int, str]:
        for frame, text in v.items():
            if frame < 0:
                raise bad("prompts", "must map frame numbers >= 0 to prompts", frame)
            check_prompt(text)
        return v


class IORequest(TaskRequest, ImageInputMixin):
    top: int | None = Field(None, description="pixel row of the image's top edge in the canvas; None centres it")
    left: int | None = Field(None, description="pixel column of the image's left edge; None centres it")
    feather: int = Field(4, ge=0, le=32, description="pixels along the image's edges with generated content "
                         "that blend from the generated pixels into the image's own; inside them the output "
                         "is the image exactly")


class IARequest(OrderMixin, VideoMixin, ImageInputMixin):
    height: int | None = Field(None, gt=0, le=1 << 16, description="defaults to the image's height")
    width: int | None = Field(None, gt=0, le=1 << 20, description="defaults to the image's width")


class UIG(Task):
    name, Request, output = "uig", UIGRequest, "image"
    summary = "unconditional image generation of any width and height"

    def job(self, req: UIGRequest, env: TaskEnv) -> Job:
        return Job(req.plan(env, 1), "image")


class T2I(Task):
    name, Request, output, needs_text = "t2i", T2IRequest, "image", True
    summary = "text to image of any size"

    def job(self, req: T2IRequest, env: TaskEnv) -> Job:
        return Job(req.plan(env, 1), "image", prompt=req.prompt)


class T2V(Task):
    name, Request, output, needs_text = "t2v", T2VRequest, "video", True
    summary = "text to video of any length"

    def job(self, req: T2VRequest, env: TaskEnv) -> Job:
        return Job(req.plan(env, req.frames), "video", prompt=req.prompts.get(0, req.prompt),
                   prompts=dict(req.prompts))


class IO(Task):
    name, Request, output = "io", IORequest, "image"
    summary = "image outpainting: the input image placed in a larger canvas and extended"

    def job(self, req: IORequest, env: TaskEnv) -> Job:
        image = env.load_image(req.image)
        rows, cols = env.grid(req.height, req.width)
        pph, ppw = env.patch_pixels
        h, w = image.shape[:2]
        if h % pph or w % ppw:
            raise bad("image", f"height and width must be multiples of the patch size {pph}x{ppw} px",
                      (h, w))
        if h > req.height or w > req.width:
            raise bad("image", f"must fit in the {req.height}x{req.width} canvas", (h, w))
        top = req.top if req.top is not None else (req.height - h) // 2 // pph * pph
        left = req.left if req.left is not None else (req.width - w) // 2 // ppw * ppw
        for name, value, unit, room in (("top", top, pph, req.height - h), ("left", left, ppw, req.width - w)):
            if value % unit or not 0 <= value <= room:
                raise bad(name, f"must be a multiple of {unit} px between 0 and {room}", value)
        y0, x0 = top // pph, left // ppw
        box = (y0, x0, y0 + h // pph, x0 + w // ppw)
        plan = Plan.outpaint(rows, cols, box, env.extent(req.extent))
        known = env.known_patches(env.encode(image), 0, y0, x0)
        return Job(plan, "image", known=known, given=[Given(0, image, top, left, req.feather)])


class IA(Task):
    name, Request, output = "ia", IARequest, "video"
    summary = "image animation: the input image is frame 0 of a video of any length"

    def job(self, req: IARequest, env: TaskEnv) -> Job:
        image = env.load_image(req.image)
        h, w = image.shape[:2]
        if (req.height or h, req.width or w) != (h, w):
            raise bad("image", f"must be {req.height or h}x{req.width or w} px, the requested frame size",
                      (h, w))
        req = req.model_copy(update={"height": h, "width": w})
        plan = req.plan(env, req.frames, known_frames=1)
        known = env.known_patches(env.encode(image), 0)
        return Job(plan, "video", known=known, given=[Given(0, image)])


@hookimpl
def streamgen_register_tasks(registry) -> None:
    for task in (UIG(), T2I(), IO(), IA(), T2V()):
        registry.add(task.name, task)
