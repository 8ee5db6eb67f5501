#!/usr/bin/env bash
# Train both shipped checkpoints side by side on one GPU, then pack them (and the logs) for transfer.
# Used on the lent H100: `bash scripts/gpu_train_all.sh OUTDIR MINUTES`.
set -u
out=${1:-/tmp/out}; minutes=${2:-8}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
nvidia-smi --query-gpu=name --format=csv,noheader
python3 scripts/train_ddpm_butterflies.py --steps 30000 --batch-size 128 --max-minutes "$minutes" \
  --workers 8 > "$out/ddpm.log" 2>&1 &
vae_minutes=$(python3 -c "print($minutes * 0.3)"); unet_minutes=$(python3 -c "print($minutes * 0.7 - 0.5)")
python3 scripts/train_text2img.py --vae-steps 6000 --unet-steps 30000 --batch-size 128 \
  --workers 8 --vae-max-minutes "$vae_minutes" --unet-max-minutes "$unet_minutes" \
  > "$out/sd.log" 2>&1 &
wait
tail -5 "$out/ddpm.log" "$out/sd.log"
cp runs/ddpm-butterflies-32/loss_log.json "$out/ddpm_loss_log.json"
cp runs/tiny-sd-butterflies/train_log.json "$out/sd_train_log.json"
tar czf - data/models | split -b 15M - "$out/models.tgz.part-"
ls -la "$out"
