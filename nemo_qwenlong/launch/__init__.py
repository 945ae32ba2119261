"""`nemo-qwenlong launch`: render (and on a login node submit) Slurm jobs through nemo-run (docs/launch.md).

`plan` builds what each kind runs (pure Python); `slurm` renders it with nemo-run; `requeue` and
`wait_ready` are the pieces the jobs themselves use.
"""
