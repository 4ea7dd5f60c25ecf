"""vlv-ray: Ray-distributed training of the Vision-Language-Vision auto-encoder."""
import os as _os

# The process that started this one, read before anything slow: a driver run as a Ray job
# stops when the job's entrypoint shell is gone (vlv_ray/train/preempt.py, DriverStop).
STARTED_BY = _os.getppid()
