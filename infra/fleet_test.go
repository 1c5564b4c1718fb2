package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// groupArnJSON is the workers' group ARN as the template has it.
func groupArnJSON() map[string]interface{} {
	return join("arn:", ref("AWS::Partition"), ":autoscaling:", ref("AWS::Region"), ":", ref("AWS::AccountId"),
		":autoScalingGroup:*:autoScalingGroupName/"+*synth.conveyor.Fleet.GroupName)
}

// fleetDispatchStatements are what the fleet adds to the functions' roles.
func fleetDispatchStatements() []interface{} {
	return []interface{}{
		stmt([]string{"autoscaling:DescribeAutoScalingGroups", "ssm:ListCommandInvocations"}, "*"),
		stmt([]string{"autoscaling:SetDesiredCapacity"}, groupArnJSON()),
	}
}

// fleetWorkerStatements are what the fleet adds to the worker's role: its
// own group only.
func fleetWorkerStatements() []interface{} {
	return []interface{}{
		stmt([]string{"autoscaling:CompleteLifecycleAction", "autoscaling:SetDesiredCapacity", "autoscaling:SetInstanceProtection"}, groupArnJSON()),
		stmt([]string{"autoscaling:DescribeAutoScalingGroups"}, "*"),
		stmt([]string{"s3:ListBucket"}, arnOf(synth.conveyor.Storage.State),
			map[string]interface{}{"StringEquals": map[string]interface{}{"s3:prefix": ActiveIndexPrefix}}),
	}
}

// withoutFleetProfile drops the launch template's instance profile.
func withoutFleetProfile(t *testing.T, profiles map[string]map[string]interface{}) map[string]map[string]interface{} {
	t.Helper()
	lt := props(t, synth.conveyor.Fleet.Template)["LaunchTemplateData"].(map[string]interface{})
	arn := lt["IamInstanceProfile"].(map[string]interface{})["Arn"].(map[string]interface{})["Fn::GetAtt"].([]interface{})[0].(string)
	out := map[string]map[string]interface{}{}
	for id, p := range profiles {
		if id != arn {
			out[id] = p
		}
	}
	return out
}

func TestFleetParameters(t *testing.T) {
	params := synth.json["Parameters"].(map[string]interface{})
	for name, want := range map[string]float64{"MaxWorkers": 1, "IdleStopMinutes": 20} {
		p, _ := params[name].(map[string]interface{})
		if p == nil || p["Type"] != "Number" || p["Default"] != want {
			t.Errorf("parameter %s = %v, want a Number defaulting to %v", name, p, want)
		}
	}
}

// The group: from zero to MaxWorkers, in the isolated subnets, from the
// launch template, counting in-service instances for the backlog alarm.
func TestFleetGroup(t *testing.T) {
	f := synth.conveyor.Fleet
	p := props(t, f.Group)
	if p["MinSize"] != "0" || !cmp.Equal(p["MaxSize"], plain(t, ref("MaxWorkers"))) || p["DesiredCapacity"] != nil {
		t.Errorf("sizes min %v max %v desired %v; want 0, MaxWorkers, unset", p["MinSize"], p["MaxSize"], p["DesiredCapacity"])
	}
	// On demand: the launch template; on Spot: a mixed instances policy.
	lt := p["LaunchTemplate"].(map[string]interface{})["Fn::If"].([]interface{})
	if lt[0] != "UseSpotWorkers" || !cmp.Equal(lt[2].(map[string]interface{})["LaunchTemplateId"], plain(t, ref(logicalID(f.Template)))) {
		t.Errorf("launch template %v", lt)
	}
	mixed := p["MixedInstancesPolicy"].(map[string]interface{})["Fn::If"].([]interface{})
	dist := mixed[1].(map[string]interface{})["InstancesDistribution"].(map[string]interface{})
	if mixed[0] != "UseSpotWorkers" || dist["OnDemandPercentageAboveBaseCapacity"] != 0.0 || dist["SpotAllocationStrategy"] != "price-capacity-optimized" {
		t.Errorf("mixed instances policy %v", mixed)
	}
	if n := len(p["VPCZoneIdentifier"].([]interface{})); n != len(*synth.conveyor.Network.Vpc.IsolatedSubnets()) {
		t.Errorf("%d subnets, want the isolated ones", n)
	}
	if !strings.Contains(flatten(p["MetricsCollection"]), "GroupInServiceInstances") {
		t.Errorf("metrics collection %v lacks GroupInServiceInstances", p["MetricsCollection"])
	}
	if p["AutoScalingGroupName"] != *f.GroupName {
		t.Errorf("group name %v, want %s (the roles' ARNs name it)", p["AutoScalingGroupName"], *f.GroupName)
	}
}

// The launch template: IMDSv2 only (hop limit 1) with instance tags, no
// key, no public address, the worker's role and security group, encrypted
// volumes, the data volume kept on termination, the worker tag on the
// instance and the DLM policy's tag on the volumes.
func TestFleetLaunchTemplate(t *testing.T) {
	c := synth.conveyor
	d := props(t, c.Fleet.Template)["LaunchTemplateData"].(map[string]interface{})
	want := map[string]interface{}{"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1.0, "InstanceMetadataTags": "enabled"}
	if diff := cmp.Diff(want, d["MetadataOptions"]); diff != "" {
		t.Errorf("metadata options (-want +got):\n%s", diff)
	}
	for _, k := range []string{"KeyName", "NetworkInterfaces"} {
		if d[k] != nil {
			t.Errorf("%s = %v, want none", k, d[k])
		}
	}
	if diff := cmp.Diff(plain(t, []interface{}{getAtt(logicalID(c.Network.WorkerSecurityGroup), "GroupId")}), d["SecurityGroupIds"]); diff != "" {
		t.Errorf("security groups (-want +got):\n%s", diff)
	}
	profiles := resources("AWS::IAM::InstanceProfile")
	id := d["IamInstanceProfile"].(map[string]interface{})["Arn"].(map[string]interface{})["Fn::GetAtt"].([]interface{})[0].(string)
	if diff := cmp.Diff(plain(t, []interface{}{ref(logicalID(c.Worker.Role))}), profiles[id]["Properties"].(map[string]interface{})["Roles"]); diff != "" {
		t.Errorf("instance profile roles (-want +got):\n%s", diff)
	}
	devices := map[string]map[string]interface{}{}
	for _, b := range d["BlockDeviceMappings"].([]interface{}) {
		m := b.(map[string]interface{})
		devices[m["DeviceName"].(string)] = m["Ebs"].(map[string]interface{})
	}
	// The data volume is kept on termination, except on Spot.
	for dev, del := range map[string]interface{}{"/dev/xvda": true, DataVolumeGroupDevice: map[string]interface{}{"Fn::If": []interface{}{"UseSpotWorkers", true, false}}} {
		ebs := devices[dev]
		if ebs == nil || ebs["Encrypted"] != true || ebs["VolumeType"] != "gp3" || !cmp.Equal(ebs["DeleteOnTermination"], del) {
			t.Errorf("%s: %v; want encrypted gp3, DeleteOnTermination %v", dev, ebs, del)
		}
	}
	byType := map[string]map[string]string{}
	for _, ts := range d["TagSpecifications"].([]interface{}) {
		m := ts.(map[string]interface{})
		byType[m["ResourceType"].(string)] = tags(m)
	}
	if byType["instance"][WorkerTagKey] != WorkerTagValue {
		t.Errorf("instance tags %v lack %s=%s", byType["instance"], WorkerTagKey, WorkerTagValue)
	}
	// The DLM policy targets exactly the tag the volumes carry.
	dlm := props(t, c.Snapshots.Policy)["PolicyDetails"].(map[string]interface{})
	for _, tt := range dlm["TargetTags"].([]interface{}) {
		m := tt.(map[string]interface{})
		if byType["volume"][flatten(m["Key"])] != flatten(m["Value"]) {
			t.Errorf("volume tags %v lack the DLM target tag %v", byType["volume"], m)
		}
	}
}

// User data: the worker's first boot on its own volume, the SSM agent
// running one command per job slot, the drain service with the idle stop,
// and the ready hook completed last.
func TestFleetUserData(t *testing.T) {
	d := props(t, synth.conveyor.Fleet.Template)["LaunchTemplateData"].(map[string]interface{})
	script := flatten(d["UserData"])
	for _, want := range []string{
		"ebsnvme-id -v /dev/sdf",
		`vol="$CONVEYOR_DATA_VOLUME"`,
		"mkfs.xfs -L conveyor-data",
		`cfg.setdefault("Mds", {})["CommandWorkersLimit"] = slots`,
		`exec python3 - "$agentcfg" "$(nproc)"`,
		"Before=amazon-ssm-agent.service",
		"systemctl enable conveyor-agent-limit.service",
		"systemctl restart amazon-ssm-agent",
		"ExecStart=/usr/local/bin/conveyor worker watch --config " + WorkerConfigPath + " --volume " + VolumeMountPoint + " --protect --idle-stop {Ref:IdleStopMinutes}m --ready-hook " + ReadyHook,
		"systemctl enable --now conveyor-watch.service",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("fleet user data lacks %q", want)
		}
	}
	if strings.Contains(script, "vol=''") {
		t.Error("fleet user data waits for an empty volume ID")
	}
	// The same release as the standalone worker's boot script: read from
	// the one parameter, each file checked by its hash.
	for _, want := range []string{
		"aws ssm get-parameter --name '" + synth.conveyor.Worker.Release.Name + "'",
		"sha256sum -c --status",
		"\n/usr/local/sbin/conveyor-install\n",
		"/usr/local/bin/conveyor worker prepare --config '" + WorkerConfigPath + "'",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("fleet user data lacks %q", want)
		}
	}
	// The watch, which completes the ready hook, starts last.
	if strings.Index(script, "systemctl restart amazon-ssm-agent") > strings.Index(script, "enable --now conveyor-watch") ||
		strings.Index(script, "mount '"+VolumeMountPoint+"'") > strings.Index(script, "enable --now conveyor-watch") {
		t.Error("the watch (and the ready hook) starts before the worker is set up")
	}
}

// The warm pool keeps stopped workers and reuses them on scale-in; the
// drain hook waits for the worker's watch; the ready hook for user data.
func TestFleetWarmPoolAndHooks(t *testing.T) {
	f := synth.conveyor.Fleet
	wp := props(t, f.WarmPool)
	if wp["PoolState"] != "Stopped" || !cmp.Equal(wp["InstanceReusePolicy"], map[string]interface{}{"ReuseOnScaleIn": true}) {
		t.Errorf("warm pool %v, want Stopped with ReuseOnScaleIn", wp)
	}
	for _, h := range []struct {
		p                   map[string]interface{}
		name, transition, r string
		heartbeat           float64
	}{
		{props(t, f.DrainHook), DrainHook, "autoscaling:EC2_INSTANCE_TERMINATING", "CONTINUE", DrainHeartbeatSeconds},
		{props(t, f.ReadyHook), ReadyHook, "autoscaling:EC2_INSTANCE_LAUNCHING", "ABANDON", ReadyHeartbeatSeconds},
	} {
		if h.p["LifecycleHookName"] != h.name || h.p["LifecycleTransition"] != h.transition || h.p["DefaultResult"] != h.r || h.p["HeartbeatTimeout"] != h.heartbeat {
			t.Errorf("hook %v, want %s on %s, %s after %vs", h.p, h.name, h.transition, h.r, h.heartbeat)
		}
		if !cmp.Equal(h.p["AutoScalingGroupName"], plain(t, ref(logicalID(f.Group)))) {
			t.Errorf("hook %s on %v", h.name, h.p["AutoScalingGroupName"])
		}
	}
}

// Scale-out follows the backlog per in-service worker, from the
// reconciler's Backlog metric; the alarm triggers the step policy.
func TestFleetScaling(t *testing.T) {
	c := synth.conveyor
	p := props(t, c.Fleet.ScaleOut)
	if p["PolicyType"] != "StepScaling" || p["AdjustmentType"] != "ChangeInCapacity" {
		t.Errorf("policy %v", p)
	}
	a := props(t, c.Fleet.BacklogAlarm)
	if !cmp.Equal(a["AlarmActions"], plain(t, []interface{}{ref(logicalID(c.Fleet.ScaleOut))})) || a["Threshold"] != float64(BacklogPerWorker) || a["ComparisonOperator"] != "GreaterThanThreshold" {
		t.Errorf("alarm %v", a)
	}
	b, _ := json.Marshal(a["Metrics"])
	m := string(b)
	for _, want := range []string{`"MetricName":"Backlog"`, `"Namespace":"Conveyor"`, `"Name":"Function"`, logicalID(c.Recon.Function), "GroupInServiceInstances", "backlog / workers"} {
		if !strings.Contains(m, want) {
			t.Errorf("alarm metrics lack %q: %s", want, m)
		}
	}
}

// By default the group is the worker: the seed's standalone instance,
// its volume and their outputs exist only with DedicatedWorker=true; the
// warm pool only without Spot (AWS has none for Spot).
func TestFleetConditions(t *testing.T) {
	c := synth.conveyor
	for _, r := range []map[string]interface{}{resource(t, c.Worker.Instance), resource(t, c.Worker.DataVolume)} {
		if r["Condition"] != "HasDedicatedWorker" {
			t.Errorf("%s: condition %v, want HasDedicatedWorker", r["Type"], r["Condition"])
		}
	}
	if r := resource(t, c.Worker.DataVolume); r["DeletionPolicy"] != "Retain" {
		t.Errorf("data volume deletion policy %v: retiring the instance must keep it", r["DeletionPolicy"])
	}
	outputs := synth.json["Outputs"].(map[string]interface{})
	for _, id := range []string{"WorkerInstanceId", "DataVolumeId"} {
		if o, _ := outputs[id].(map[string]interface{}); o["Condition"] != "HasDedicatedWorker" {
			t.Errorf("output %s: %v, want the HasDedicatedWorker condition", id, o)
		}
	}
	if _, ok := outputs["WorkerGroupName"]; !ok {
		t.Error("no WorkerGroupName output")
	}
	if r := resource(t, c.Fleet.WarmPool); r["Condition"] != "UseWarmPool" {
		t.Errorf("warm pool condition %v, want UseWarmPool", r["Condition"])
	}
	params := synth.json["Parameters"].(map[string]interface{})
	for _, name := range []string{"SpotWorkers", "DedicatedWorker"} {
		if p, _ := params[name].(map[string]interface{}); p["Default"] != "false" {
			t.Errorf("parameter %s = %v, want default false", name, p)
		}
	}
}
