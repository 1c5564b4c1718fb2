package main

import "strings"

// userDataValues are the deploy-time values (CDK tokens) and the hashes
// the script embeds. The Bundle fields are empty without a bundle.
type userDataValues struct {
	Region, AssetURL, ConfigURL, InputBucket, OutputBucket, StateBucket, VolumeID, JobLogGroup *string
	BinarySHA256, ConfigSHA256                                                                 string
	BundleURL                                                                                  *string
	BundleSHA256, BundleArchive                                                                string
}

// workerUserData is the worker's boot script: it installs the binary, the
// configuration and the processor bundle from their assets, each checked
// by SHA-256, prepares the data volume without ever formatting a volume
// that already has a filesystem (a restored snapshot, a volume kept from
// an earlier stack), and sets the processor up. cloud-init runs it at the
// instance's first boot; it installs a per-boot hook that runs the
// instance's current user data at every later boot, so a deploy that
// changes any of them (which stops and starts the instance, never
// replaces it) installs the new ones. It is safe to run again.
func workerUserData(v userDataValues) []*string {
	script := userDataScript
	if v.BundleURL != nil {
		script = strings.Replace(script, "@BUNDLE_STEP@", userDataBundleStep, 1)
	} else {
		script = strings.Replace(script, "@BUNDLE_STEP@", "# No processor bundle in the configuration.", 1)
	}
	pairs := []string{
		"@REGION@", *v.Region,
		"@ASSET_URL@", *v.AssetURL,
		"@BINARY_SHA@", v.BinarySHA256,
		"@CONFIG_URL@", *v.ConfigURL,
		"@CONFIG_SHA@", v.ConfigSHA256,
		"@CONFIG_PART@", WorkerConfigPartPath,
		"@INPUT@", *v.InputBucket,
		"@OUTPUT@", *v.OutputBucket,
		"@STATE@", *v.StateBucket,
		"@VOLUME_ID@", *v.VolumeID,
		"@JOB_LOGS@", *v.JobLogGroup,
		"@EVENT_BUS@", EventBus,
		"@MOUNT@", VolumeMountPoint,
		"@MACHINE@", WorkerMachineDir,
		"@BUNDLES@", WorkerBundleDir,
		"@CONFIG@", WorkerConfigPath,
	}
	if v.BundleURL != nil {
		pairs = append(pairs, "@BUNDLE_URL@", *v.BundleURL, "@BUNDLE_SHA@", v.BundleSHA256, "@BUNDLE_ARCHIVE@", v.BundleArchive)
	}
	r := strings.NewReplacer(pairs...)
	var lines []*string
	for _, l := range strings.Split(strings.TrimSpace(r.Replace(script)), "\n") {
		l := l
		lines = append(lines, &l)
	}
	return lines
}

// userDataBundleStep fetches the processor bundle where the worker's
// configuration names it (processor.bundle, with its bundle_sha256);
// `conveyor worker prepare` unpacks it into its own directory.
const userDataBundleStep = `# The processor bundle, from its CDK asset, where processor.bundle names it.
fetch '@BUNDLE_URL@' '@BUNDLE_SHA@' '@BUNDLE_ARCHIVE@'`

// userDataScript is appended after CDK's "#!/bin/bash" line.
const userDataScript = `
set -euo pipefail
exec > >(tee -a /var/log/conveyor-user-data.log) 2>&1

# cloud-init runs user data at an instance's first boot only. A deploy that
# changes it (a new binary, configuration or processor bundle) stops and
# starts the instance: this hook runs the current user data at every boot.
install -d -m 0755 /var/lib/cloud/scripts/per-boot
cat > /var/lib/cloud/scripts/per-boot/conveyor-user-data <<'CONVEYOR_PER_BOOT'
#!/bin/bash
set -euo pipefail
token="$(curl -sSf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token)"
curl -sSf -H "X-aws-ec2-metadata-token: $token" -o /run/conveyor-user-data http://169.254.169.254/latest/user-data
exec bash /run/conveyor-user-data
CONVEYOR_PER_BOOT
chmod 0755 /var/lib/cloud/scripts/per-boot/conveyor-user-data

# fetch URL SHA256 FILE: a CDK asset (the role may read those objects
# only), installed whole and only with the SHA-256 the stack was built with.
fetch() {
  if [ -f "$3" ] && echo "$2  $3" | sha256sum -c --status; then return 0; fi
  aws s3 cp "$1" "$3.new" --region '@REGION@' --only-show-errors
  if ! echo "$2  $3.new" | sha256sum -c --status; then
    echo "conveyor: $1 does not have SHA-256 $2; not installed" >&2
    rm -f "$3.new"
    return 1
  fi
  mv -f "$3.new" "$3"
}
install -d -m 0755 /etc/conveyor '@MOUNT@' '@MACHINE@' '@BUNDLES@'

# The processor sandbox: processor.sandbox auto (the default) uses
# bubblewrap when it works, required refuses to start without it.
command -v bwrap >/dev/null 2>&1 || dnf install -y -q bubblewrap ||
  echo "conveyor: could not install bubblewrap: processors run unsandboxed (processor.sandbox: required would refuse)" >&2

# The worker binary.
fetch '@ASSET_URL@' '@BINARY_SHA@' /usr/local/bin/conveyor.asset
install -m 0755 /usr/local/bin/conveyor.asset /usr/local/bin/conveyor

# The worker's configuration: the stack's own settings, then the worker's
# part of the deployed conveyor.yaml. s3.aws makes the CLI use Amazon S3
# with the instance role's credentials (SSM Run Command reads no profile or
# /etc/environment, so this lives in the file). Job events go to the
# default EventBridge bus, job metrics (EMF) to stdout, which SSM sends to
# the command log group, and job logs to the stack's job log group.
fetch '@CONFIG_URL@' '@CONFIG_SHA@' '@CONFIG_PART@'
{
cat <<'CONVEYOR_CONFIG'
s3: {aws: true, region: @REGION@}
buckets: {input: @INPUT@, output: @OUTPUT@, state: @STATE@}
volume: @MOUNT@
data_dir: @MACHINE@
events: {bus: @EVENT_BUS@}
metrics: {emf: true}
logs: {group: @JOB_LOGS@}
CONVEYOR_CONFIG
cat '@CONFIG_PART@'
} > '@CONFIG@.new'
mv -f '@CONFIG@.new' '@CONFIG@'

@BUNDLE_STEP@

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

# The processor, ready before the first job: the bundle checked, unpacked
# into @BUNDLES@/<sha256>/ and its setup run once per version. When setup
# fails, this says why, and every job command refuses to take a job.
/usr/local/bin/conveyor worker prepare --config '@CONFIG@'
`
