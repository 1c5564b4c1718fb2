package main

import (
	"strconv"
	"strings"
)

// userDataValues are the deploy-time values (CDK tokens) the boot script
// embeds. None of them changes with a build: what a deploy ships (the
// binary, the worker's configuration, the bundle, each with its hash) is
// in the release parameter, which the script reads at every boot.
type userDataValues struct {
	Region, InputBucket, OutputBucket, StateBucket, VolumeID, JobLogGroup *string
	// ReleaseParameter is the name of the SSM parameter holding the
	// release manifest (see releaseManifest).
	ReleaseParameter *string
}

// workerUserData is the worker's boot script: it writes conveyor-install,
// which installs the release the stack's SSM parameter names (binary,
// configuration, processor bundle, each checked by SHA-256) and which the
// update document runs too, prepares the data volume without ever
// formatting a volume that already has a filesystem (a restored snapshot,
// a volume kept from an earlier stack), and sets the processor up.
// cloud-init runs it at the instance's first boot; it installs a per-boot
// hook that runs it at every later boot, so a worker started after a
// deploy installs the current release. It does not change when a build
// does, so a deploy never stops, starts or replaces a worker. It is safe
// to run again.
func workerUserData(v userDataValues) []*string {
	r := strings.NewReplacer(
		"@INSTALL@", installScript,
		"@REIDENTIFY@", reidentifyScript,
		"@REGION@", *v.Region,
		"@RELEASE@", *v.ReleaseParameter,
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
		"@DRAIN_WAIT@", strconv.Itoa(int(UpdateDrainWait.Seconds())),
	)
	// Twice: the install script's own placeholders come in with it.
	script := r.Replace(r.Replace(userDataScript))
	var lines []*string
	for _, l := range strings.Split(strings.TrimSpace(script), "\n") {
		l := l
		lines = append(lines, &l)
	}
	return lines
}

// reidentifyScript runs once the data volume ($vol) is mounted.
const reidentifyScript = `# One volume identity per EBS volume: a file system first made on another
# volume (a clone or a restore from an EBS snapshot) gets a new identity,
# as 'conveyor snapshot restore --to' gives a local copy one (volume.Reidentify:
# the identity file and the lock holders go; the worker makes a new one).
# Otherwise a worker on the copy could pass for the original and take over
# its jobs.
if [ -n "$vol" ]; then
  made_on="$(cat '@MOUNT@/.ebs-volume-id' 2>/dev/null || true)"
  if [ -n "$made_on" ] && [ "$made_on" != "$vol" ]; then
    echo "conveyor: the data on $vol comes from $made_on (a snapshot restore or clone): new volume identity" >&2
    rm -f '@MOUNT@/volume-id' '@MOUNT@'/locks/*.holder*
  fi
  echo "$vol" > '@MOUNT@/.ebs-volume-id.new' && mv '@MOUNT@/.ebs-volume-id.new' '@MOUNT@/.ebs-volume-id'
fi
`

// userDataScript is appended after CDK's "#!/bin/bash" line.
const userDataScript = `
set -euo pipefail
exec > >(tee -a /var/log/conveyor-user-data.log) 2>&1

# cloud-init runs user data at an instance's first boot only: this hook
# runs it at every boot, so a worker started after a deploy (from the warm
# pool, or the standalone one) installs the current release.
install -d -m 0755 /var/lib/cloud/scripts/per-boot
cat > /var/lib/cloud/scripts/per-boot/conveyor-user-data <<'CONVEYOR_PER_BOOT'
#!/bin/bash
set -euo pipefail
token="$(curl -sSf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token)"
curl -sSf -H "X-aws-ec2-metadata-token: $token" -o /run/conveyor-user-data http://169.254.169.254/latest/user-data
exec bash /run/conveyor-user-data
CONVEYOR_PER_BOOT
chmod 0755 /var/lib/cloud/scripts/per-boot/conveyor-user-data
install -d -m 0755 /etc/conveyor '@MOUNT@' '@MACHINE@' '@BUNDLES@'

# The processor sandbox: processor.sandbox auto (the default) uses
# bubblewrap when it works, required refuses to start without it.
command -v bwrap >/dev/null 2>&1 || dnf install -y -q bubblewrap ||
  echo "conveyor: could not install bubblewrap: processors run unsandboxed (processor.sandbox: required would refuse)" >&2

# conveyor-install installs the stack's current release; the update
# document (State Manager, at every deploy that changes the release) runs
# it with --drain.
cat > /usr/local/sbin/conveyor-install <<'CONVEYOR_INSTALL'
@INSTALL@
CONVEYOR_INSTALL
chmod 0755 /usr/local/sbin/conveyor-install

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

@REIDENTIFY@

# The binary, the configuration and the processor (set up before the
# first job) of the current release.
/usr/local/sbin/conveyor-install
`

// installScript is /usr/local/sbin/conveyor-install. It reads the release
// manifest from the SSM parameter (one line per file: binary, config and
// bundle, each with its CDK asset URL and SHA-256; the bundle with where
// the configuration expects its archive), downloads what is not installed
// yet, each kept only with its hash, and installs it: the binary, the
// configuration (the stack's own settings, then the worker's part of the
// deployed conveyor.yaml), the bundle, then conveyor worker prepare.
// With --drain (the update document) it first stages every download, and
// only when something changed drains the worker (no new job; running jobs
// finish, for up to @DRAIN_WAIT@ s, then are told to hand their jobs
// back), installs, and returns it to service.
const installScript = `#!/bin/bash
set -euo pipefail
# One install at a time (a boot and an update may meet).
exec 9>/run/conveyor-install.lock
flock 9
drain=false; [ "${1:-}" = --drain ] && drain=true
release="$(aws ssm get-parameter --name '@RELEASE@' --region '@REGION@' --query Parameter.Value --output text)"

# stage URL SHA256 FILE: FILE.new is the asset, checked; nothing when FILE
# already has the hash. A CDK asset the worker role may read (those only).
changed=()
stage() {
  if [ -f "$3" ] && echo "$2  $3" | sha256sum -c --status; then return 0; fi
  # A few tries: the role's new permissions may take seconds to apply.
  local try
  for try in 1 2 3; do
    aws s3 cp "$1" "$3.new" --region '@REGION@' --only-show-errors && break
    [ "$try" -lt 3 ] || return 1
    sleep 10
  done
  if ! echo "$2  $3.new" | sha256sum -c --status; then
    echo "conveyor-install: $1 does not have SHA-256 $2; not installed" >&2
    rm -f "$3.new"
    return 1
  fi
  changed+=("$3")
}
while read -r kind url sha archive; do
  case "$kind" in
    binary) stage "$url" "$sha" /usr/local/bin/conveyor.asset ;;
    config) stage "$url" "$sha" '@CONFIG_PART@' ;;
    bundle) stage "$url" "$sha" "$archive" ;;
    "") ;;
    *) echo "conveyor-install: unknown release entry $kind" >&2; exit 1 ;;
  esac
done <<< "$release"

if $drain && [ ${#changed[@]} -eq 0 ]; then
  echo "conveyor-install: the current release is installed"
  exit 0
fi

# Drain: the watch (which would clear the mark of a worker in service)
# stops; the mark makes every worker run take no new job (a job sent
# here is due again at once, taken elsewhere); running jobs finish.
watch=false
if $drain; then
  if systemctl is-active --quiet conveyor-watch.service; then watch=true; systemctl stop conveyor-watch.service; fi
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) update to a new release" > '@MOUNT@/draining'
  trap "rm -f '@MOUNT@/draining'; if $watch; then systemctl start conveyor-watch.service; fi" EXIT
  running() {
    local n=0 f
    for f in '@MOUNT@'/runs/*; do [ -e "$f" ] && kill -0 "${f##*/}" 2>/dev/null && n=$((n+1)); done
    echo "$n"
  }
  deadline=$(( $(date +%s) + @DRAIN_WAIT@ ))
  while [ "$(running)" -gt 0 ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 10; done
  if [ "$(running)" -gt 0 ]; then
    echo "conveyor-install: jobs still running after @DRAIN_WAIT@ s: told to hand their jobs back" >&2
    for f in '@MOUNT@'/runs/*; do [ -e "$f" ] && kill -TERM "${f##*/}" 2>/dev/null || true; done
    for _ in $(seq 1 24); do [ "$(running)" -eq 0 ] && break; sleep 5; done
  fi
fi

for f in "${changed[@]}"; do mv -f "$f.new" "$f"; done
install -m 0755 /usr/local/bin/conveyor.asset /usr/local/bin/conveyor

# The worker's configuration. s3.aws makes the CLI use Amazon S3 with the
# instance role's credentials (SSM Run Command reads no profile or
# /etc/environment, so this lives in the file). Job events go to the
# default EventBridge bus, job metrics (EMF) to stdout, which SSM sends to
# the command log group, and job logs to the stack's job log group.
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

# The processor, ready before the next job: the bundle checked, unpacked
# into @BUNDLES@/<sha256>/ and its setup run once per version. When setup
# fails, this says why, and every job command refuses to take a job.
/usr/local/bin/conveyor worker prepare --config '@CONFIG@'

# A watch started at boot before this install runs the old binary.
if ! $drain && printf '%s\n' "${changed[@]}" | grep -qx /usr/local/bin/conveyor.asset; then
  systemctl try-restart conveyor-watch.service
fi
echo "conveyor-install: release installed"`
