"""Op-level kernel model: GEMM, attention and all-reduce times from fitted efficiency curves.

``hwmodels.kernels.api`` has the public functions (``gemm_time_ms``, ``attention_time_ms``,
``allreduce_time_ms``, exported by ``hwmodels``) and the seconds-level ones the roofline's
operators price their rows with; ``fits`` the curves' named parameters; ``gemm``,
``attention`` and ``allreduce`` their physics; ``measured`` the packaged measurements they are
fitted on (``python -m hwmodels.fit_kernels``).
"""
