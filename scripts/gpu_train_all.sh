#!/usr/bin/env bash
# Train both shipped checkpoints side by side on one GPU, then pack them (and the logs) for transfer.
# Used on the lent H100: `bash scripts/gpu_train_all.sh OUTDIR MINUTES`.
set -u
out=${1:-/tmp/out}; minutes=${2:-8}; init=${3:-}  # init=yes: a second round from data/models
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
nvidia-smi --query-gpu=name --format=csv,noheader
ddpm_init=(); sd_init=()
if [ -n "$init" ]; then
  cp -r data/models /tmp/round1
  ddpm_init=(--init-from /tmp/round1/ddpm-butterflies-32 --output runs/ddpm-round2)
  sd_init=(--init-from /tmp/round1/tiny-sd-butterflies --output runs/sd-round2)
fi
python3 scripts/train_ddpm_butterflies.py "${ddpm_init[@]}" --steps 30000 --batch-size 128 \
  --max-minutes "$minutes" --workers 8 > "$out/ddpm.log" 2>&1 &
vae_minutes=$(python3 -c "print($minutes * 0.3)"); unet_minutes=$(python3 -c "print($minutes * 0.7 - 0.5)")
[ -n "$init" ] && unet_minutes=$(python3 -c "print($minutes - 0.5)")  # no VAE stage in round 2
python3 scripts/train_text2img.py "${sd_init[@]}" --vae-steps 6000 --unet-steps 30000 --batch-size 128 \
  --workers 8 --vae-max-minutes "$vae_minutes" --unet-max-minutes "$unet_minutes" \
  > "$out/sd.log" 2>&1 &
wait
grep -v "it/s]" "$out/ddpm.log" "$out/sd.log" | tail -20
cp runs/*/loss_log.json "$out/ddpm_loss_log.json"
cp runs/*/train_log.json "$out/sd_train_log.json"
tar czf - data/models | split -b 15M - "$out/models.tgz.part-"
ls -la "$out"
