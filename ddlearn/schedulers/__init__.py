"""Schedulers: how a noise prediction becomes the next, less noisy sample. One file per method."""

from ddlearn.schedulers.common import SchedulerOutput
from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.schedulers.dpm_solver import DPMSolverMultistepScheduler
from ddlearn.schedulers.euler import EulerDiscreteScheduler
from ddlearn.schedulers.euler_ancestral import EulerAncestralDiscreteScheduler
from ddlearn.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ddlearn.schedulers.flow_match_heun import FlowMatchHeunDiscreteScheduler
from ddlearn.schedulers.heun import HeunDiscreteScheduler
from ddlearn.schedulers.lms import LMSDiscreteScheduler
from ddlearn.schedulers.pndm import PNDMScheduler
from ddlearn.schedulers.unipc import UniPCMultistepScheduler

__all__ = ["SchedulerOutput", "DDPMScheduler", "DDIMScheduler", "PNDMScheduler",
           "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
           "LMSDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
           "FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"]
