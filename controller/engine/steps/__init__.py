"""What the engine does, one function per step, found by name in ``REGISTRY``.

Every step function takes the same typed inputs (``StepContext``, the release,
the decided ``Step``, the snapshot it was decided on) and changes Milvus only
through the context's ports. The modules follow a release's life:

* ``build``: ``build``, ``discard_incomplete``, ``index``, ``load``
* ``validate``: ``validate``, ``accept``, ``abort``
* ``flip``: ``flip``, ``verify_flip``
* ``retire``: ``release``, ``retain``, ``clear_rollback``
* ``monitor``: ``capture_reference``, ``monitor``
* ``webhooks``: ``post_promotion`` (and the preBuild and prePromotion gates that
  ``build`` and ``validate`` call)
"""

from __future__ import annotations

from controller.engine.step import StepName
from controller.engine.steps import build, flip, monitor, retire, validate, webhooks
from controller.engine.steps.context import Progress, Settings, StepContext, StepFunction

REGISTRY: dict[StepName, StepFunction] = {
    StepName.BUILD: build.build,
    StepName.DISCARD_INCOMPLETE: build.discard_incomplete,
    StepName.INDEX: build.index,
    StepName.LOAD: build.load,
    StepName.VALIDATE: validate.validate,
    StepName.ACCEPT: validate.accept,
    StepName.ABORT: validate.abort,
    StepName.FLIP: flip.flip,
    StepName.VERIFY_FLIP: flip.verify_flip,
    StepName.RELEASE: retire.release_candidate,
    StepName.RETAIN: retire.retain,
    StepName.CLEAR_ROLLBACK: retire.clear_rollback,
    StepName.CAPTURE_REFERENCE: monitor.capture_reference,
    StepName.MONITOR: monitor.monitor,
    StepName.POST_PROMOTION: webhooks.post_promotion,
}

__all__ = ["REGISTRY", "Progress", "Settings", "StepContext", "StepFunction"]
