package main

import "strings"

// userDataValues are the deploy-time values (CDK tokens) the script embeds.
type userDataValues struct {
	Region, AssetURL, InputBucket, OutputBucket, StateBucket, VolumeID *string
}

// workerUserData is the worker's first-boot script: it installs the binary,
// writes the config, and prepares the data volume without ever formatting a
// volume that already has a filesystem (a restored snapshot, a volume kept
// from an earlier stack). It runs as root under cloud-init, once per instance.
func workerUserData(v userDataValues) []*string {
	r := strings.NewReplacer(
		"@REGION@", *v.Region,
		"@ASSET_URL@", *v.AssetURL,
		"@INPUT@", *v.InputBucket,
		"@OUTPUT@", *v.OutputBucket,
		"@STATE@", *v.StateBucket,
		"@VOLUME_ID@", *v.VolumeID,
		"@MOUNT@", VolumeMountPoint,
		"@CONFIG@", WorkerConfigPath,
	)
	var lines []*string
	for _, l := range strings.Split(strings.TrimSpace(r.Replace(userDataScript)), "\n") {
		l := l
		lines = append(lines, &l)
	}
	return lines
}

// userDataScript is appended after CDK's "#!/bin/bash" line.
const userDataScript = `
set -euo pipefail
exec > >(tee -a /var/log/conveyor-user-data.log) 2>&1

# The worker binary, from its CDK asset (the role may read that object only).
aws s3 cp '@ASSET_URL@' /usr/local/bin/conveyor.new --region '@REGION@' --only-show-errors
install -m 0755 /usr/local/bin/conveyor.new /usr/local/bin/conveyor
rm -f /usr/local/bin/conveyor.new

# The worker's configuration: s3.aws makes the CLI use Amazon S3 with the
# instance role's credentials (SSM Run Command reads no profile or
# /etc/environment, so this lives in the file).
install -d -m 0755 /etc/conveyor '@MOUNT@'
cat > '@CONFIG@' <<'CONVEYOR_CONFIG'
s3: {aws: true, region: @REGION@}
buckets: {input: @INPUT@, output: @OUTPUT@, state: @STATE@}
volume: @MOUNT@
processor: {name: report}
CONVEYOR_CONFIG

# The data volume is attached after the instance starts. On Nitro it is an
# NVMe device whose serial is the volume ID without its dash.
vol='@VOLUME_ID@'
dev="/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${vol/-/}"
for _ in $(seq 1 120); do [ -e "$dev" ] && break; sleep 5; done
if [ ! -e "$dev" ]; then echo "conveyor: volume $vol not attached after 10 minutes; attach it and rerun this script" >&2; exit 1; fi
udevadm settle

# Format only a blank volume: blkid finds no filesystem on it.
if ! blkid -o value -s TYPE "$dev" >/dev/null 2>&1; then
  mkfs.xfs -L conveyor-data "$dev"
  udevadm settle
fi
uuid="$(blkid -o value -s UUID "$dev")"
# nofail: the instance still boots (and SSM still works) without the volume.
grep -q "^UUID=$uuid " /etc/fstab || echo "UUID=$uuid @MOUNT@ xfs defaults,nofail,x-systemd.device-timeout=30s 0 2" >> /etc/fstab
systemctl daemon-reload
mountpoint -q '@MOUNT@' || mount '@MOUNT@'
install -d -m 0750 '@MOUNT@/work' '@MOUNT@/logs'
`
