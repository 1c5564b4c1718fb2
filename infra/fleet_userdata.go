package main

import "strings"

// fleetPrelude finds the worker's own data volume (the launch template
// attaches it as /dev/sdf: on Nitro an NVMe device, linked by udev), for
// the first-boot script that formats it only when blank.
const fleetPrelude = `export CONVEYOR_DATA_VOLUME=""
for _ in $(seq 1 60); do [ -e /dev/sdf ] && break; sleep 2; done
CONVEYOR_DATA_VOLUME="$(ebsnvme-id -v /dev/sdf 2>/dev/null | grep -o 'vol-[0-9a-f]*' | head -1)"
# Without ebsnvme-id: the NVMe serial is the volume ID without its dash.
[ -n "$CONVEYOR_DATA_VOLUME" ] || CONVEYOR_DATA_VOLUME="$(lsblk -dno SERIAL "$(readlink -f /dev/sdf)" 2>/dev/null | sed 's/^vol/vol-/')"
export CONVEYOR_DATA_VOLUME`

// fleetUserData is the fleet's part of first boot, after the worker's:
// the SSM agent runs as many commands at once as the volume has job slots
// (one per vCPU, the `workers` default; key Mds.CommandWorkersLimit of
// amazon-ssm-agent.json, default 5), and the drain service starts, which
// completes the ready hook so the group may use (or stop) the instance.
func fleetUserData(idleStopMinutes *string) []*string {
	r := strings.NewReplacer("@IDLE@", *idleStopMinutes, "@MOUNT@", VolumeMountPoint, "@CONFIG@", WorkerConfigPath, "@HOOK@", ReadyHook)
	var lines []*string
	for _, l := range strings.Split(strings.TrimSpace(r.Replace(fleetScript)), "\n") {
		l := l
		lines = append(lines, &l)
	}
	return lines
}

const fleetScript = `
# The SSM agent runs one command per job slot (a bigger instance runs more):
# set at every boot, before the agent starts, so a resized worker follows.
cat > /usr/local/sbin/conveyor-agent-limit <<'AGENT_LIMIT'
#!/bin/sh
agentcfg=/etc/amazon/ssm/amazon-ssm-agent.json
[ -f "$agentcfg" ] || cp /etc/amazon/ssm/amazon-ssm-agent.json.template "$agentcfg" 2>/dev/null || echo '{}' > "$agentcfg"
exec python3 - "$agentcfg" "$(nproc)" <<'AGENT_CONFIG'
import json, sys
path, slots = sys.argv[1], int(sys.argv[2])
cfg = json.load(open(path))
cfg.setdefault("Mds", {})["CommandWorkersLimit"] = slots
json.dump(cfg, open(path, "w"), indent=2)
AGENT_CONFIG
AGENT_LIMIT
chmod 0755 /usr/local/sbin/conveyor-agent-limit
cat > /etc/systemd/system/conveyor-agent-limit.service <<'LIMIT_UNIT'
[Unit]
Description=Conveyor: SSM agent concurrent commands = job slots (vCPUs)
Before=amazon-ssm-agent.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/conveyor-agent-limit

[Install]
WantedBy=multi-user.target
LIMIT_UNIT
systemctl daemon-reload
systemctl enable conveyor-agent-limit.service
/usr/local/sbin/conveyor-agent-limit
systemctl restart amazon-ssm-agent

# Drain before leaving the group; stop when idle.
cat > /etc/systemd/system/conveyor-watch.service <<'WATCH_UNIT'
[Unit]
Description=Conveyor: drain this worker before it leaves its Auto Scaling group
After=network-online.target
RequiresMountsFor=@MOUNT@

[Service]
ExecStart=/usr/local/bin/conveyor worker watch --config @CONFIG@ --volume @MOUNT@ --protect --idle-stop @IDLE@m --ready-hook @HOOK@
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
WATCH_UNIT
systemctl daemon-reload
# Started last, at every boot: it completes the ready hook (the group
# runs it at first launch and at every start from the warm pool).
systemctl enable --now conveyor-watch.service

`
