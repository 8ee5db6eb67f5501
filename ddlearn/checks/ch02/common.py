"""What more than one chapter-02 check uses: the scheduler classes whose methods are answers."""

import ddlearn.schedulers as schedulers

#: every ddlearn scheduler class: each one's `step` computes x̂_0, its `set_timesteps` the spacings
SCHEDULERS = [getattr(schedulers, name) for name in schedulers.__all__ if name != "SchedulerOutput"]
