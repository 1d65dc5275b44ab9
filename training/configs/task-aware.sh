#!/usr/bin/env bash
# Re-create the task-aware weights. They use the score-based checkpoints/score/enhancer-3d1cc699.ckpt (set in each config).
# Two queues of one thread each; about 35 min per queue on 2 CPU cores.
set -euo pipefail
NDPCA=${NDPCA:-.venv/bin/ndpca}
run() { $NDPCA train --config "training/configs/$1.toml" --ship "$2" --no-progress --set train.threads=1; }
( run ta-ndpca-e4d1 checkpoints/task_aware && run ta-ndpca-e2d1 checkpoints/task_aware \
  && run ta-jae checkpoints/task_aware && run rdp-lp0 checkpoints/perception/lp-0 \
  && run ta-naive-e4d1-full checkpoints/task_aware/full_latent ) &
( run ta-naive-e4d1 checkpoints/task_aware && run ta-naive-e2d1 checkpoints/task_aware \
  && run rdp-lp0.1 checkpoints/perception/lp-0.1 && run rdp-lp1 checkpoints/perception/lp-1 \
  && run ta-naive-e2d1-full checkpoints/task_aware/full_latent ) &
wait
