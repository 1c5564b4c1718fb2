package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"github.com/conveyorhq/conveyor/internal/bundle"
	"github.com/conveyorhq/conveyor/internal/cli"
	"github.com/conveyorhq/conveyor/internal/lambda"
)

func TestBuckets(t *testing.T) {
	s := synth.conveyor.Storage
	if n := len(resources("AWS::S3::Bucket")); n != 4 {
		t.Errorf("%d buckets, want 4 (input, output, state, logs)", n)
	}
	if logicalID(s.Input) == logicalID(s.Output) {
		t.Fatal("input and output are the same bucket")
	}
	abort := map[string]interface{}{"Id": "abort-incomplete-multipart-uploads", "AbortIncompleteMultipartUpload": map[string]interface{}{"DaysAfterInitiation": 7}, "Status": "Enabled"}
	for _, tc := range []struct {
		name      string
		bucket    awss3.Bucket
		versioned bool
		logPrefix string // "" for the log bucket itself
		rules     []interface{}
	}{
		{"input", s.Input, true, "s3/input/", []interface{}{
			map[string]interface{}{"Id": "expire-old-versions", "NoncurrentVersionExpiration": map[string]interface{}{"NoncurrentDays": 30}, "Status": "Enabled"}, abort}},
		{"output", s.Output, false, "s3/output/", []interface{}{abort}},
		{"state", s.State, false, "s3/state/", []interface{}{
			map[string]interface{}{"Id": "expire-job-logs", "Prefix": "logs/", "ExpirationInDays": 90, "Status": "Enabled"},
			// Finished history: records tagged finished, and done/ markers,
			// after HistoryRetentionDays. Nothing matches an untagged
			// record, an active/ marker or a cursor.
			map[string]interface{}{"Id": "expire-finished-job-records", "Prefix": "jobs/",
				"TagFilters":       []interface{}{map[string]interface{}{"Key": "conveyor-finished", "Value": "true"}},
				"ExpirationInDays": ref("HistoryRetentionDays"), "Status": "Enabled"},
			map[string]interface{}{"Id": "expire-done-markers", "Prefix": "done/", "ExpirationInDays": ref("HistoryRetentionDays"), "Status": "Enabled"},
			abort}},
		{"logs", s.Logs, false, "", []interface{}{
			map[string]interface{}{"Id": "expire-logs", "ExpirationInDays": 90, "Status": "Enabled"}, abort}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := resource(t, tc.bucket)
			p := r["Properties"].(map[string]interface{})
			if r["DeletionPolicy"] != "Retain" || r["UpdateReplacePolicy"] != "Retain" {
				t.Errorf("DeletionPolicy/UpdateReplacePolicy = %v/%v, want Retain", r["DeletionPolicy"], r["UpdateReplacePolicy"])
			}
			want := map[string]interface{}{"BlockPublicAcls": true, "BlockPublicPolicy": true, "IgnorePublicAcls": true, "RestrictPublicBuckets": true}
			if d := cmp.Diff(plain(t, want), p["PublicAccessBlockConfiguration"]); d != "" {
				t.Errorf("block public access (-want +got):\n%s", d)
			}
			enc := plain(t, map[string]interface{}{"ServerSideEncryptionConfiguration": []interface{}{
				map[string]interface{}{"ServerSideEncryptionByDefault": map[string]interface{}{"SSEAlgorithm": "AES256"}}}})
			if d := cmp.Diff(enc, p["BucketEncryption"]); d != "" {
				t.Errorf("encryption (-want +got):\n%s", d)
			}
			var versioning interface{}
			if tc.versioned {
				versioning = map[string]interface{}{"Status": "Enabled"}
			}
			if d := cmp.Diff(versioning, p["VersioningConfiguration"]); d != "" {
				t.Errorf("versioning (-want +got):\n%s", d)
			}
			var logging interface{}
			if tc.logPrefix != "" {
				logging = plain(t, map[string]interface{}{"DestinationBucketName": ref(logicalID(s.Logs)), "LogFilePrefix": tc.logPrefix})
			}
			if d := cmp.Diff(logging, p["LoggingConfiguration"]); d != "" {
				t.Errorf("server access logging (-want +got):\n%s", d)
			}
			got := p["LifecycleConfiguration"].(map[string]interface{})["Rules"]
			if d := cmp.Diff(plain(t, tc.rules), got); d != "" {
				t.Errorf("lifecycle rules (-want +got):\n%s", d)
			}
			// enforceSSL: the bucket policy denies every request without TLS.
			synth.template.HasResourceProperties(jsii.String("AWS::S3::BucketPolicy"), map[string]interface{}{
				"Bucket": ref(logicalID(tc.bucket)),
				"PolicyDocument": assertions.Match_ObjectLike(&map[string]interface{}{
					"Statement": assertions.Match_ArrayWith(&[]interface{}{map[string]interface{}{
						"Action":    "s3:*",
						"Condition": map[string]interface{}{"Bool": map[string]interface{}{"aws:SecureTransport": "false"}},
						"Effect":    "Deny",
						"Principal": map[string]interface{}{"AWS": "*"},
						"Resource":  []interface{}{arnOf(tc.bucket), join(arnOf(tc.bucket), "/*")},
					}}),
				}),
			})
		})
	}
}

func TestOrchestratorFunction(t *testing.T) {
	c := synth.conveyor
	p := props(t, c.Orch.Function)
	checks := map[string]interface{}{
		"Runtime":                      "provided.al2023",
		"Architectures":                []interface{}{"arm64"},
		"Handler":                      "bootstrap",
		"ReservedConcurrentExecutions": float64(DefaultReservedConcurrency),
		"Role":                         arnOf(c.Orch.Role),
		"LoggingConfig":                map[string]interface{}{"LogGroup": ref(logicalID(c.Orch.LogGroup))},
	}
	for k, want := range checks {
		if d := cmp.Diff(plain(t, want), p[k]); d != "" {
			t.Errorf("%s (-want +got):\n%s", k, d)
		}
	}
	env := map[string]interface{}{
		"CONVEYOR_LAMBDA_ROLE":       "orchestrator",
		"CONVEYOR_INPUT_BUCKET":      ref(logicalID(c.Storage.Input)),
		"CONVEYOR_OUTPUT_BUCKET":     ref(logicalID(c.Storage.Output)),
		"CONVEYOR_STATE_BUCKET":      ref(logicalID(c.Storage.State)),
		"CONVEYOR_SSM_DOCUMENT":      ref("RunJobDocument"),
		"CONVEYOR_WORKER_TAG_KEY":    "conveyor:role",
		"CONVEYOR_WORKER_TAG_VALUE":  "worker",
		"CONVEYOR_SSM_LOG_GROUP":     ref(logicalID(c.Worker.CommandLogs)),
		"CONVEYOR_FILTER_PREFIXES":   "incoming/,scans/",
		"CONVEYOR_FILTER_SUFFIXES":   ".pdf,.PDF",
		"CONVEYOR_MAX_ATTEMPTS":      "4",
		"CONVEYOR_EXECUTION_TIMEOUT": "1h0m0s",
		"CONVEYOR_INPUT_VERSIONED":   "true",
		"CONVEYOR_HISTORY_DAYS":      ref("HistoryRetentionDays"),
		"CONVEYOR_WORKER_GROUP":      *c.Fleet.GroupName,
		"CONVEYOR_EVENT_BUS":         "default",
	}
	if d := cmp.Diff(plain(t, env), p["Environment"].(map[string]interface{})["Variables"]); d != "" {
		t.Errorf("environment (-want +got):\n%s", d)
	}
	if p["Timeout"] != float64(30) {
		t.Errorf("Timeout = %v, want 30", p["Timeout"])
	}
	for _, lg := range []constructs.IConstruct{c.Orch.LogGroup, c.Recon.LogGroup, c.Worker.CommandLogs, c.Worker.JobLogs} {
		if got := props(t, lg)["RetentionInDays"]; got != float64(30) {
			t.Errorf("log group %s retention = %v, want 30", logicalID(lg), got)
		}
	}
	synth.template.HasResourceProperties(jsii.String("AWS::Lambda::EventInvokeConfig"), map[string]interface{}{
		"FunctionName":             ref(logicalID(c.Orch.Function)),
		"MaximumRetryAttempts":     OrchestratorRetryAttempts,
		"MaximumEventAgeInSeconds": OrchestratorMaxEventAge * 3600,
		"DestinationConfig":        map[string]interface{}{"OnFailure": map[string]interface{}{"Destination": arnOf(c.Orch.DLQ)}},
	})
	q := props(t, c.Orch.DLQ)
	if q["SqsManagedSseEnabled"] != true {
		t.Errorf("DLQ SqsManagedSseEnabled = %v, want true", q["SqsManagedSseEnabled"])
	}
	synth.template.HasResourceProperties(jsii.String("AWS::SQS::QueuePolicy"), map[string]interface{}{
		"PolicyDocument": assertions.Match_ObjectLike(&map[string]interface{}{
			"Statement": assertions.Match_ArrayWith(&[]interface{}{assertions.Match_ObjectLike(&map[string]interface{}{
				"Effect": "Deny", "Condition": map[string]interface{}{"Bool": map[string]interface{}{"aws:SecureTransport": "false"}},
			})}),
		}),
	})
}

func TestNotification(t *testing.T) {
	c := synth.conveyor
	notif := resources("Custom::S3BucketNotifications")
	if len(notif) != 1 {
		t.Fatalf("%d bucket notification resources, want 1", len(notif))
	}
	// One notification per prefix and suffix of the deployed conveyor.yaml.
	var want []interface{}
	for _, p := range []string{"incoming/", "scans/"} {
		for _, s := range []string{".pdf", ".PDF"} {
			want = append(want, map[string]interface{}{
				"Events":            []interface{}{"s3:ObjectCreated:*"},
				"LambdaFunctionArn": arnOf(c.Orch.Function),
				"Filter": map[string]interface{}{"Key": map[string]interface{}{"FilterRules": []interface{}{
					map[string]interface{}{"Name": "suffix", "Value": s},
					map[string]interface{}{"Name": "prefix", "Value": p},
				}}},
			})
		}
	}
	for _, r := range notif {
		p := r["Properties"].(map[string]interface{})
		if d := cmp.Diff(plain(t, ref(logicalID(c.Storage.Input))), p["BucketName"]); d != "" {
			t.Errorf("BucketName (-want +got):\n%s", d)
		}
		got := p["NotificationConfiguration"].(map[string]interface{})["LambdaFunctionConfigurations"]
		if d := cmp.Diff(plain(t, want), got); d != "" {
			t.Errorf("notifications (-want +got):\n%s", d)
		}
	}
	if conds, _ := synth.json["Conditions"].(map[string]interface{}); conds["HasFilterPrefix"] != nil {
		t.Error("the filter parameters' conditions are still in the template")
	}
	// S3 may invoke the function, for this bucket and account only.
	synth.template.HasResourceProperties(jsii.String("AWS::Lambda::Permission"), map[string]interface{}{
		"Action":        "lambda:InvokeFunction",
		"FunctionName":  arnOf(c.Orch.Function),
		"Principal":     "s3.amazonaws.com",
		"SourceArn":     arnOf(c.Storage.Input),
		"SourceAccount": ref("AWS::AccountId"),
	})
}

func TestParameters(t *testing.T) {
	params := synth.json["Parameters"].(map[string]interface{})
	for name, def := range map[string]interface{}{
		"InstanceType": "t4g.small", "SnapshotTime": "03:00", "SnapshotRetain": float64(7),
		"HistoryRetentionDays": float64(30),
		// DLM's target tag: the seed's Backup=True unless changed.
		"BackupTagKey": "Backup", "BackupTagValue": "True",
	} {
		p, ok := params[name].(map[string]interface{})
		if !ok {
			t.Errorf("no parameter %s", name)
			continue
		}
		if p["Default"] != def {
			t.Errorf("%s default = %#v, want %#v", name, p["Default"], def)
		}
	}
	for _, gone := range []string{"FilterPrefix", "FilterSuffix"} {
		if params[gone] != nil {
			t.Errorf("parameter %s: the filters come from the deployed conveyor.yaml", gone)
		}
	}
	// The AMI is pinned: a parameter of the image ID itself (not an SSM
	// parameter CloudFormation resolves again at every deploy), defaulting
	// to the AMI cdk.json pins, for the instance and the launch template.
	if id := logicalIDOfImageParam(t); id != "WorkerImageId" {
		t.Errorf("the instance's ImageId refers to %q, want the WorkerImageId parameter", id)
	}
	img := params["WorkerImageId"].(map[string]interface{})
	if img["Default"] != fixtureImageID || img["Type"] != "AWS::EC2::Image::Id" {
		t.Errorf("WorkerImageId = %v, want an AWS::EC2::Image::Id defaulting to the pinned %s", img, fixtureImageID)
	}
	lt := props(t, synth.conveyor.Fleet.Template)["LaunchTemplateData"].(map[string]interface{})
	if !cmp.Equal(lt["ImageId"], plain(t, ref("WorkerImageId"))) {
		t.Errorf("launch template ImageId %v, want the WorkerImageId parameter", lt["ImageId"])
	}
	for name, p := range params {
		if name == "BootstrapVersion" { // CDK's own, not the AMI
			continue
		}
		if strings.Contains(fmt.Sprint(p.(map[string]interface{})["Type"]), "AWS::SSM::Parameter::Value") {
			t.Errorf("parameter %s is resolved from SSM at every deploy: %v", name, p)
		}
	}
}

// logicalIDOfImageParam finds the parameter the instance's ImageId refers to.
func logicalIDOfImageParam(t *testing.T) string {
	t.Helper()
	id, _ := props(t, synth.conveyor.Worker.Instance)["ImageId"].(map[string]interface{})["Ref"].(string)
	return id
}

func TestNetwork(t *testing.T) {
	for _, typ := range []string{"AWS::EC2::InternetGateway", "AWS::EC2::NatGateway", "AWS::EC2::EIP", "AWS::EC2::VPCGatewayAttachment"} {
		if n := len(resources(typ)); n != 0 {
			t.Errorf("%d %s, want none (isolated subnets only)", n, typ)
		}
	}
	subnets := resources("AWS::EC2::Subnet")
	if len(subnets) != 2 {
		t.Errorf("%d subnets, want 2 (isolated, two AZs)", len(subnets))
	}
	for id, s := range subnets {
		if s["Properties"].(map[string]interface{})["MapPublicIpOnLaunch"] != false {
			t.Errorf("subnet %s maps public IPs", id)
		}
	}
	for _, r := range resources("AWS::EC2::Route") {
		t.Errorf("route %v: isolated subnets need none (the S3 gateway endpoint adds its own)", r["Properties"])
	}
	var gateway, iface []string
	for _, e := range resources("AWS::EC2::VPCEndpoint") {
		p := e["Properties"].(map[string]interface{})
		svc := flatten(p["ServiceName"])
		if p["VpcEndpointType"] == "Interface" {
			iface = append(iface, svc)
			if p["PrivateDnsEnabled"] != true {
				t.Errorf("endpoint %s: private DNS off", svc)
			}
			if d := cmp.Diff(plain(t, []interface{}{getAtt(logicalID(synth.conveyor.Network.EndpointSecurityGroup), "GroupId")}), p["SecurityGroupIds"]); d != "" {
				t.Errorf("endpoint %s security groups (-want +got):\n%s", svc, d)
			}
		} else {
			gateway = append(gateway, svc)
		}
	}
	wantIface := []string{"com.amazonaws.{Ref:AWS::Region}.ssm", "com.amazonaws.{Ref:AWS::Region}.ssmmessages", "com.amazonaws.{Ref:AWS::Region}.ec2messages",
		"com.amazonaws.{Ref:AWS::Region}.autoscaling", // the workers' Auto Scaling calls (fleet.go)
		"com.amazonaws.{Ref:AWS::Region}.logs",        // command output (EMF metrics) and job logs
		"com.amazonaws.{Ref:AWS::Region}.events"}      // job events
	sortStrings := cmp.Transformer("sort", func(in []string) []string { out := append([]string(nil), in...); sortStringSlice(out); return out })
	if d := cmp.Diff(wantIface, iface, sortStrings); d != "" {
		t.Errorf("interface endpoints (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"com.amazonaws.{Ref:AWS::Region}.s3"}, gateway); d != "" {
		t.Errorf("gateway endpoints (-want +got):\n%s", d)
	}
	synth.template.ResourceCountIs(jsii.String("AWS::EC2::FlowLog"), jsii.Number(1))
	// The endpoints admit HTTPS from the worker's security group only.
	ep := props(t, synth.conveyor.Network.EndpointSecurityGroup)
	want := []interface{}{map[string]interface{}{
		"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "Description": "HTTPS from the worker",
		"SourceSecurityGroupId": getAtt(logicalID(synth.conveyor.Network.WorkerSecurityGroup), "GroupId"),
	}}
	ingress := resources("AWS::EC2::SecurityGroupIngress")
	var got []interface{}
	for _, r := range ingress {
		p := r["Properties"].(map[string]interface{})
		delete(p, "GroupId")
		got = append(got, p)
	}
	if ep["SecurityGroupIngress"] != nil {
		got = append(got, ep["SecurityGroupIngress"].([]interface{})...)
	}
	if d := cmp.Diff(plain(t, want), plain(t, got)); d != "" {
		t.Errorf("ingress rules in the whole stack (-want +got):\n%s", d)
	}
}

func TestWorkerInstance(t *testing.T) {
	c := synth.conveyor
	p := props(t, c.Worker.Instance)
	checks := map[string]interface{}{
		"InstanceType":     ref("InstanceType"),
		"MetadataOptions":  map[string]interface{}{"HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1, "HttpTokens": "required"},
		"SubnetId":         ref(logicalID(c.Network.WorkerSubnet)),
		"SecurityGroupIds": []interface{}{getAtt(logicalID(c.Network.WorkerSecurityGroup), "GroupId")},
		"BlockDeviceMappings": []interface{}{map[string]interface{}{"DeviceName": "/dev/xvda",
			"Ebs": map[string]interface{}{"DeleteOnTermination": true, "Encrypted": true, "VolumeSize": 8, "VolumeType": "gp3"}}},
	}
	for k, want := range checks {
		if d := cmp.Diff(plain(t, want), p[k]); d != "" {
			t.Errorf("%s (-want +got):\n%s", k, d)
		}
	}
	for _, k := range []string{"KeyName", "NetworkInterfaces"} {
		if p[k] != nil {
			t.Errorf("%s = %v, want none (no SSH key, no public address)", k, p[k])
		}
	}
	if tg := tags(p); tg[WorkerTagKey] != WorkerTagValue {
		t.Errorf("instance tags %v lack %s=%s", tg, WorkerTagKey, WorkerTagValue)
	}
	profile := withoutFleetProfile(t, resources("AWS::IAM::InstanceProfile"))
	if len(profile) != 1 {
		t.Fatalf("%d instance profiles, want 1", len(profile))
	}
	for id, r := range profile {
		if d := cmp.Diff(plain(t, ref(id)), p["IamInstanceProfile"]); d != "" {
			t.Errorf("instance profile (-want +got):\n%s", d)
		}
		if d := cmp.Diff(plain(t, []interface{}{ref(logicalID(c.Worker.Role))}), r["Properties"].(map[string]interface{})["Roles"]); d != "" {
			t.Errorf("instance profile roles (-want +got):\n%s", d)
		}
	}
	sg := props(t, c.Network.WorkerSecurityGroup)
	if sg["SecurityGroupIngress"] != nil {
		t.Errorf("worker security group has ingress rules: %v", sg["SecurityGroupIngress"])
	}
	wantEgress := []interface{}{map[string]interface{}{"CidrIp": "0.0.0.0/0", "Description": "HTTPS to the SSM endpoints and the S3 gateway endpoint", "FromPort": 443, "IpProtocol": "tcp", "ToPort": 443}}
	if d := cmp.Diff(plain(t, wantEgress), sg["SecurityGroupEgress"]); d != "" {
		t.Errorf("worker egress (-want +got):\n%s", d)
	}
}

func TestDataVolume(t *testing.T) {
	c := synth.conveyor
	r := resource(t, c.Worker.DataVolume)
	if r["DeletionPolicy"] != "Retain" || r["UpdateReplacePolicy"] != "Retain" {
		t.Errorf("data volume DeletionPolicy/UpdateReplacePolicy = %v/%v, want Retain", r["DeletionPolicy"], r["UpdateReplacePolicy"])
	}
	p := r["Properties"].(map[string]interface{})
	if p["VolumeType"] != "gp3" || p["Encrypted"] != true || p["Size"] != float64(DefaultDataVolumeGiB) {
		t.Errorf("data volume = %v, want gp3, encrypted, %d GiB", p, DefaultDataVolumeGiB)
	}
	if d := cmp.Diff(props(t, c.Worker.Instance)["AvailabilityZone"], p["AvailabilityZone"]); d != "" {
		t.Errorf("volume and instance AZs differ (-instance +volume):\n%s", d)
	}
	// The backup tag, as the parameters name it (default Backup=True).
	if tg := tags(p); tg["{Ref:BackupTagKey}"] != "{Ref:BackupTagValue}" {
		t.Errorf("volume tags %v lack BackupTagKey=BackupTagValue", tg)
	}
	synth.template.HasResourceProperties(jsii.String("AWS::EC2::VolumeAttachment"), map[string]interface{}{
		"Device": DataVolumeDevice, "InstanceId": ref(logicalID(c.Worker.Instance)), "VolumeId": ref(logicalID(c.Worker.DataVolume)),
	})
}

func TestUserData(t *testing.T) {
	c := synth.conveyor
	script := flatten(props(t, c.Worker.Instance)["UserData"])
	vol := "{Ref:" + logicalID(c.Worker.DataVolume) + "}"
	for _, want := range []string{
		"#!/bin/bash\nset -euo pipefail",
		// every later boot runs the current user data (a worker started
		// after a deploy installs the current release)
		"cat > /var/lib/cloud/scripts/per-boot/conveyor-user-data <<'CONVEYOR_PER_BOOT'",
		"http://169.254.169.254/latest/user-data\nexec bash /run/conveyor-user-data\nCONVEYOR_PER_BOOT\n",
		// the release from its SSM parameter, not from user data
		"cat > /usr/local/sbin/conveyor-install <<'CONVEYOR_INSTALL'\n#!/bin/bash\n",
		"release=\"$(aws ssm get-parameter --name '/conveyor/Conveyor/release' --region '{Ref:AWS::Region}' --query Parameter.Value --output text)\"",
		// each asset installed only with the hash the release names
		"if ! echo \"$2  $3.new\" | sha256sum -c --status; then",
		"    binary) stage \"$url\" \"$sha\" /usr/local/bin/conveyor.asset ;;\n" +
			"    config) stage \"$url\" \"$sha\" '/etc/conveyor/conveyor.deployed.yaml' ;;\n" +
			"    bundle) stage \"$url\" \"$sha\" \"$archive\" ;;",
		"install -m 0755 /usr/local/bin/conveyor.asset /usr/local/bin/conveyor",
		// the worker's part of conveyor.yaml after the stack's settings
		"cat <<'CONVEYOR_CONFIG'\n" +
			"s3: {aws: true, region: {Ref:AWS::Region}}\n" +
			"buckets: {input: {Ref:" + logicalID(c.Storage.Input) + "}, output: {Ref:" + logicalID(c.Storage.Output) + "}, state: {Ref:" + logicalID(c.Storage.State) + "}}\n" +
			"volume: /var/lib/conveyor\n" +
			"data_dir: /opt/conveyor\n" +
			"events: {bus: default}\n" +
			"metrics: {emf: true}\n" +
			"logs: {group: {Ref:" + logicalID(c.Worker.JobLogs) + "}}\n" +
			"CONVEYOR_CONFIG\n" +
			"cat '/etc/conveyor/conveyor.deployed.yaml'\n" +
			"} > '/etc/conveyor/conveyor.yaml.new'\n" +
			"mv -f '/etc/conveyor/conveyor.yaml.new' '/etc/conveyor/conveyor.yaml'",
		// an update drains first: the watch stopped, the mark, the wait
		"systemctl stop conveyor-watch.service; fi\n  echo \"$(date -u +%Y-%m-%dT%H:%M:%SZ) update to a new release\" > '/var/lib/conveyor/draining'",
		"deadline=$(( $(date +%s) + 900 ))",
		"/usr/local/sbin/conveyor-install\n",
		// the processor sandbox installed where it is missing
		"command -v bwrap >/dev/null 2>&1 || dnf install -y -q bubblewrap ||",
		// the NVMe device by the volume ID's serial
		"vol='" + vol + "'\ndev=\"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${vol/-/}\"",
		// format only when blkid finds no filesystem
		"if ! blkid -o value -s TYPE \"$dev\" >/dev/null 2>&1; then\n  mkfs.xfs -L conveyor-data \"$dev\"",
		"/var/lib/conveyor xfs defaults,nofail,x-systemd.device-timeout=30s 0 2\" >> /etc/fstab",
		"mount '/var/lib/conveyor'",
		// the processor set up before the next job
		"/usr/local/bin/conveyor worker prepare --config '/etc/conveyor/conveyor.yaml'",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("user data lacks:\n%s\n--- user data:\n%s", want, script)
		}
	}
	if n := strings.Count(script, "mkfs"); n != 1 {
		t.Errorf("user data runs mkfs %d times, want once (behind the blkid check)", n)
	}
	// The binary asset is a plain file upload (not a zip).
	if *c.Worker.Binary.IsZipArchive() {
		t.Error("worker binary asset is zipped")
	}
}

// The configuration and bundle assets are the files the worker checks:
// the staged files in the cloud assembly have the SHA-256 user data names,
// the bundle's is the version of examples/pdftotext, and the worker's part
// of conveyor.yaml names that bundle by path and hash.
func TestConfigAndBundleAssets(t *testing.T) {
	c := synth.conveyor
	out := *synth.assembly.Directory()
	staged := func(a interface{ AssetHash() *string }, ext string) string {
		p := filepath.Join(out, "asset."+*a.AssetHash()+ext)
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("asset not staged in the cloud assembly: %v", err)
		}
		return p
	}
	if got := fileSHA256(staged(c.Config.ConfigAsset, ".yaml")); got != c.Config.ConfigSHA256 {
		t.Errorf("config asset SHA-256 %s, user data checks %s", got, c.Config.ConfigSHA256)
	}
	if got := fileSHA256(staged(c.Config.BundleAsset, ".zip")); got != c.Config.BundleSHA256 {
		t.Errorf("bundle asset SHA-256 %s, user data checks %s", got, c.Config.BundleSHA256)
	}
	if v, err := bundle.HashDir(exampleBundle); err != nil || v != c.Config.BundleSHA256 {
		t.Errorf("bundle version %s (%v), want the example's %s", c.Config.BundleSHA256, err, v)
	}
	part := string(c.Config.WorkerPart)
	for _, want := range []string{"bundle: /opt/conveyor/bundles/" + c.Config.BundleSHA256 + ".zip", "bundle_sha256: " + c.Config.BundleSHA256, "max_attempts: 4", "timeout: 20m"} {
		if !strings.Contains(part, want) {
			t.Errorf("worker config lacks %q:\n%s", want, part)
		}
	}
	for _, local := range []string{"9100", "dashboard", "s3:"} {
		if strings.Contains(part, local) {
			t.Errorf("worker config carries the local setting %q:\n%s", local, part)
		}
	}
}

// A conveyor.yaml the stack cannot deploy is refused before synthesis,
// with a message that names the problem.
func TestUndeployableConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "conveyor.yaml")
	os.WriteFile(p, []byte("filter: {prefixes: [in/, in/pdf/]}\n"), 0o644)
	_, err := loadConfig(p)
	if err == nil || !strings.Contains(err.Error(), `filter.prefixes "in/pdf/" and "in/" overlap`) {
		t.Errorf("overlapping prefixes: %v", err)
	}
}

func TestNotificationFilters(t *testing.T) {
	str := func(fs [][]*awss3.NotificationKeyFilter) []string {
		var out []string
		for _, f := range fs {
			if f == nil {
				out = append(out, "*")
				continue
			}
			out = append(out, fmt.Sprintf("%s*%s", deref(f[0].Prefix), deref(f[0].Suffix)))
		}
		return out
	}
	for _, tc := range []struct {
		prefixes, suffixes, want []string
	}{
		{nil, nil, []string{"*"}},
		{[]string{"a/"}, nil, []string{"a/*"}},
		{nil, []string{".pdf", ".csv"}, []string{"*.pdf", "*.csv"}},
		{[]string{"a/", "b/"}, []string{".pdf"}, []string{"a/*.pdf", "b/*.pdf"}},
	} {
		if d := cmp.Diff(tc.want, str(notificationFilters(tc.prefixes, tc.suffixes))); d != "" {
			t.Errorf("%v x %v (-want +got):\n%s", tc.prefixes, tc.suffixes, d)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestSnapshotPolicy(t *testing.T) {
	c := synth.conveyor
	want := map[string]interface{}{
		"State":            "ENABLED",
		"ExecutionRoleArn": arnOf(c.Snapshots.Role),
		"PolicyDetails": map[string]interface{}{
			"PolicyType":    "EBS_SNAPSHOT_MANAGEMENT",
			"ResourceTypes": []interface{}{"VOLUME"},
			"TargetTags":    []interface{}{map[string]interface{}{"Key": ref("BackupTagKey"), "Value": ref("BackupTagValue")}},
			"Schedules": []interface{}{map[string]interface{}{
				"Name":       "daily",
				"CreateRule": map[string]interface{}{"Interval": 24, "IntervalUnit": "HOURS", "Times": []interface{}{ref("SnapshotTime")}},
				"RetainRule": map[string]interface{}{"Count": ref("SnapshotRetain")},
				"CopyTags":   true,
				"TagsToAdd":  []interface{}{map[string]interface{}{"Key": "conveyor:snapshot", "Value": "dlm-daily"}},
			}},
		},
	}
	p := props(t, c.Snapshots.Policy)
	for k, w := range want {
		if d := cmp.Diff(plain(t, w), p[k]); d != "" {
			t.Errorf("%s (-want +got):\n%s", k, d)
		}
	}
	r := props(t, c.Snapshots.Role)
	wantRole := map[string]interface{}{
		"AssumeRolePolicyDocument": map[string]interface{}{"Version": "2012-10-17", "Statement": []interface{}{map[string]interface{}{
			"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": map[string]interface{}{"Service": "dlm.amazonaws.com"}}}},
		"ManagedPolicyArns": []interface{}{join("arn:", ref("AWS::Partition"), ":iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole")},
	}
	for k, w := range wantRole {
		if d := cmp.Diff(plain(t, w), r[k]); d != "" {
			t.Errorf("DLM role %s (-want +got):\n%s", k, d)
		}
	}
}

func TestSSMDocument(t *testing.T) {
	docs := resources("AWS::SSM::Document")
	r, ok := docs["RunJobDocument"]
	if _, update := docs[logicalID(synth.conveyor.Worker.Release.Document)]; !ok || !update || len(docs) != 2 {
		t.Fatalf("SSM documents %v, want RunJobDocument and the update document", docs)
	}
	p := r["Properties"].(map[string]interface{})
	if p["DocumentType"] != "Command" || p["DocumentFormat"] != "YAML" {
		t.Errorf("document type/format = %v/%v, want Command/YAML", p["DocumentType"], p["DocumentFormat"])
	}
	raw, err := os.ReadFile(synth.ssmDocumentPath)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]interface{}
	if err := yaml.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(plain(t, want), p["Content"]); d != "" {
		t.Errorf("document content differs from %s (-file +template):\n%s", synth.ssmDocumentPath, d)
	}
	jobID := p["Content"].(map[string]interface{})["parameters"].(map[string]interface{})["JobId"].(map[string]interface{})
	if jobID["allowedPattern"] != "^[0-9a-f]{32}$" || jobID["interpolationType"] != "ENV_VAR" {
		t.Errorf("JobId parameter = %v, want allowedPattern ^[0-9a-f]{32}$ and interpolationType ENV_VAR", jobID)
	}
}

func TestOutputs(t *testing.T) {
	outputs := synth.json["Outputs"].(map[string]interface{})
	c := synth.conveyor
	for name, want := range map[string]interface{}{
		"InputBucketName":          ref(logicalID(c.Storage.Input)),
		"OutputBucketName":         ref(logicalID(c.Storage.Output)),
		"StateBucketName":          ref(logicalID(c.Storage.State)),
		"WorkerInstanceId":         ref(logicalID(c.Worker.Instance)),
		"DataVolumeId":             ref(logicalID(c.Worker.DataVolume)),
		"OrchestratorFunctionName": ref(logicalID(c.Orch.Function)),
		"ReconcilerFunctionName":   ref(logicalID(c.Recon.Function)),
		"JobLogGroupName":          ref(logicalID(c.Worker.JobLogs)),
		"ReleaseParameterName":     "/conveyor/Conveyor/release",
		"SampleUploadCommand":      join("aws s3 cp ./report.csv s3://", ref(logicalID(c.Storage.Input)), "/"),
	} {
		o, ok := outputs[name].(map[string]interface{})
		if !ok {
			t.Errorf("no output %s", name)
			continue
		}
		if d := cmp.Diff(plain(t, want), o["Value"]); d != "" {
			t.Errorf("output %s (-want +got):\n%s", name, d)
		}
	}
}

// The environment the stack gives each function is one the Lambda accepts:
// its own configuration loader reads it, with each CloudFormation value
// replaced by a plausible deployed one, and finds the function's role.
func TestLambdaAcceptsTheStacksEnvironment(t *testing.T) {
	c := synth.conveyor
	for _, tc := range []struct {
		fn   constructs.IConstruct
		role lambda.Role
	}{{c.Orch.Function, lambda.RoleOrchestrator}, {c.Recon.Function, lambda.RoleReconciler}} {
		t.Run(string(tc.role), func(t *testing.T) {
			vars := props(t, tc.fn)["Environment"].(map[string]interface{})["Variables"].(map[string]interface{})
			env := map[string]string{}
			for k, v := range vars {
				switch x := v.(type) {
				case string:
					env[k] = x
				default: // a Ref or GetAtt: what it resolves to at deploy time
					env[k] = map[string]string{
						"CONVEYOR_SSM_DOCUMENT":       "Conveyor-RunJobDocument-AbC123",
						"CONVEYOR_SSM_LOG_GROUP":      "/conveyor/commands",
						"CONVEYOR_WORKER_INSTANCE_ID": "i-0123456789abcdef0",
					}[k]
					if env[k] == "" && strings.HasSuffix(k, "_BUCKET") {
						env[k] = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(k, "CONVEYOR_"), "_BUCKET")) + "-bucket-1a2b3c"
					}
				}
			}
			cfg, err := lambda.ConfigFromEnv(func(k string) string { return env[k] })
			if err != nil {
				t.Fatalf("the Lambda refuses the stack's environment %v: %v", env, err)
			}
			if cfg.Role != tc.role || !cfg.InputVersioned || cfg.EventBus != "default" {
				t.Errorf("role %q, versioned %v, event bus %q; want %q, true, default", cfg.Role, cfg.InputVersioned, cfg.EventBus, tc.role)
			}
			// The deployed conveyor.yaml's filters and retry limit.
			o := cfg.Orchestrator
			if d := cmp.Diff([]string{"incoming/", "scans/"}, o.Prefixes); d != "" || o.MaxAttempts != 4 || !slices.Equal(o.Suffixes, []string{".pdf", ".PDF"}) {
				t.Errorf("orchestrator config %+v; want the deployed file's filters and max_attempts 4 (%s)", o, d)
			}
		})
	}
}

// The configuration file the user data writes is one `conveyor worker run`
// accepts: the real binary reads it (the stack's settings, then the
// worker's part of the deployed conveyor.yaml), checks and unpacks the
// bundle archive where the file names it, runs the example bundle's setup
// (exit 2 would mean a configuration error, exit 1 with "setup failed" a
// bundle that cannot be set up) and goes on to reach the state bucket it
// names, here an S3 endpoint that refuses connections.
func TestWorkerAcceptsTheStacksConfig(t *testing.T) {
	c := synth.conveyor
	script := flatten(props(t, c.Worker.Instance)["UserData"])
	_, rest, ok := strings.Cut(script, "<<'CONVEYOR_CONFIG'\n")
	body, _, ok2 := strings.Cut(rest, "CONVEYOR_CONFIG\n")
	if !ok || !ok2 {
		t.Fatal("user data writes no configuration file")
	}
	// Values CloudFormation fills in at deploy time.
	body = regexp.MustCompile(`\{Ref:AWS::Region\}`).ReplaceAllString(body, "us-east-1")
	body = regexp.MustCompile(`\{Ref:(\w+)\}`).ReplaceAllStringFunc(body, func(m string) string {
		return strings.ToLower(strings.Trim(m, "{}")[4:]) + "-1a2b3c"
	})
	// The asset as the worker fetches it, after the stack's part, with the
	// machine's directory (/opt/conveyor) under the test's own.
	dir := t.TempDir()
	machine := filepath.Join(dir, "opt-conveyor")
	asset, err := os.ReadFile(filepath.Join(*synth.assembly.Directory(), "asset."+*c.Config.ConfigAsset.AssetHash()+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	body = strings.ReplaceAll(body+string(asset), WorkerMachineDir, machine)
	archive := strings.ReplaceAll(c.Config.BundleArchive, WorkerMachineDir, machine)
	zip, err := os.ReadFile(filepath.Join(*synth.assembly.Directory(), "asset."+*c.Config.BundleAsset.AssetHash()+".zip"))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFile(archive, string(zip), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "conveyor.yaml")
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	// The worker's loader reads the stack's own settings where the Go side
	// looks for them: job events on the default bus, EMF metrics on
	// stdout, job logs to the stack's group.
	loaded, err := cli.LoadWorkerConfig(cfg)
	if err != nil {
		t.Fatalf("the worker's loader refuses the stack's configuration: %v\n%s", err, body)
	}
	if loaded.Events.Bus != "default" || !loaded.Metrics.EMF || loaded.Logs.Group != strings.ToLower(logicalID(c.Worker.JobLogs))+"-1a2b3c" {
		t.Errorf("events.bus %q, metrics.emf %v, logs.group %q; want default, true, the job log group (%s)",
			loaded.Events.Bus, loaded.Metrics.EMF, loaded.Logs.Group, logicalID(c.Worker.JobLogs))
	}
	bin := filepath.Join(dir, "conveyor")
	if out, err := exec.Command("go", "-C", "..", "build", "-o", bin, "./cmd/conveyor").CombinedOutput(); err != nil {
		t.Fatalf("build conveyor: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "worker", "run", "--job", "0123456789abcdef0123456789abcdef", "--config", cfg, "--volume", filepath.Join(dir, "volume"))
	cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH"), "AWS_EC2_METADATA_DISABLED=true",
		"AWS_ACCESS_KEY_ID=AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY=secret", "AWS_ENDPOINT_URL_S3=http://127.0.0.1:1", "AWS_MAX_ATTEMPTS=1"}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || strings.Contains(string(out), "setup failed") {
		t.Fatalf("worker run with the stack's configuration: %v, want exit 1 (S3 unreachable)\n%s\nconfig:\n%s", err, out, body)
	}
	if !strings.Contains(string(out), "state-1a2b3c") && !strings.Contains(string(out), "127.0.0.1:1") {
		t.Errorf("worker run did not try the configured state bucket:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(machine, "bundles", c.Config.BundleSHA256, "processor")); err != nil {
		t.Errorf("worker run did not unpack the bundle by its hash: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(machine, "bundles", c.Config.BundleSHA256+".setup-ok")); err != nil {
		t.Errorf("the bundle's setup did not succeed: %v\n%s", err, out)
	}
}

// An EventBridge schedule invokes the reconciler, and may; nothing
// schedules the orchestrator.
func TestReconcileSchedule(t *testing.T) {
	c := synth.conveyor
	if n := len(resources("AWS::Events::Rule")); n != 1 {
		t.Errorf("%d EventBridge rules, want 1", n)
	}
	p := props(t, c.Recon.Schedule)
	if p["ScheduleExpression"] != "rate(15 minutes)" || p["State"] != "ENABLED" {
		t.Errorf("schedule %v, state %v; want rate(15 minutes), ENABLED", p["ScheduleExpression"], p["State"])
	}
	targets, _ := p["Targets"].([]interface{})
	if len(targets) != 1 {
		t.Fatalf("targets %v, want the reconciler", targets)
	}
	target := targets[0].(map[string]interface{})
	if d := cmp.Diff(plain(t, getAtt(logicalID(c.Recon.Function), "Arn")), target["Arn"]); d != "" {
		t.Errorf("target (-want +got):\n%s", d)
	}
	if d := cmp.Diff(plain(t, map[string]interface{}{"MaximumRetryAttempts": 0}), target["RetryPolicy"]); d != "" {
		t.Errorf("target retry policy (-want +got):\n%s", d)
	}
	synth.template.HasResourceProperties(jsii.String("AWS::Lambda::Permission"), &map[string]interface{}{
		"Action":       "lambda:InvokeFunction",
		"FunctionName": arnOf(c.Recon.Function),
		"Principal":    "events.amazonaws.com",
		"SourceArn":    getAtt(logicalID(c.Recon.Schedule), "Arn"),
	})
	for id, r := range resources("AWS::Lambda::Permission") {
		p := r["Properties"].(map[string]interface{})
		if p["Principal"] == "events.amazonaws.com" && cmp.Equal(p["FunctionName"], plain(t, arnOf(c.Orch.Function))) {
			t.Errorf("%s: EventBridge may invoke the orchestrator", id)
		}
	}
}

// The reconciler is the orchestrator's bootstrap in the reconciler role,
// with its own budget, no retries, no destination, and one pass at a time.
func TestReconcilerFunction(t *testing.T) {
	c := synth.conveyor
	o, r := props(t, c.Orch.Function), props(t, c.Recon.Function)
	if d := cmp.Diff(o["Code"], r["Code"]); d != "" || r["Code"] == nil {
		t.Errorf("the functions' code differs (-orchestrator +reconciler):\n%s", d)
	}
	if n := len(resources("AWS::Lambda::Function")); n != 3 {
		t.Errorf("%d functions, want 3 (orchestrator, reconciler, CDK's notifications handler)", n)
	}
	checks := map[string]interface{}{
		"Runtime":                      "provided.al2023",
		"Architectures":                []interface{}{"arm64"},
		"Handler":                      "bootstrap",
		"Timeout":                      ReconcilerTimeoutMinutes * 60,
		"ReservedConcurrentExecutions": 1,
		"Role":                         arnOf(c.Recon.Role),
		"LoggingConfig":                map[string]interface{}{"LogGroup": ref(logicalID(c.Recon.LogGroup))},
	}
	for k, want := range checks {
		if d := cmp.Diff(plain(t, want), r[k]); d != "" {
			t.Errorf("%s (-want +got):\n%s", k, d)
		}
	}
	if ReconcilerTimeoutMinutes*60 >= ReconcileEveryMinutes*60 || ReconcilerTimeoutMinutes*60 <= lambda.DefaultReconcileMargin.Seconds()*2 {
		t.Errorf("timeout %d min: must leave the margin (%s) a pass and end before the next tick", ReconcilerTimeoutMinutes, lambda.DefaultReconcileMargin)
	}
	// Same environment as the orchestrator's but the role.
	ov := o["Environment"].(map[string]interface{})["Variables"].(map[string]interface{})
	rv := r["Environment"].(map[string]interface{})["Variables"].(map[string]interface{})
	if rv["CONVEYOR_LAMBDA_ROLE"] != "reconciler" || ov["CONVEYOR_LAMBDA_ROLE"] != "orchestrator" {
		t.Errorf("roles: orchestrator %v, reconciler %v", ov["CONVEYOR_LAMBDA_ROLE"], rv["CONVEYOR_LAMBDA_ROLE"])
	}
	withoutRole := func(m map[string]interface{}) map[string]interface{} {
		out := map[string]interface{}{}
		for k, v := range m {
			if k != "CONVEYOR_LAMBDA_ROLE" {
				out[k] = v
			}
		}
		return out
	}
	if d := cmp.Diff(withoutRole(ov), withoutRole(rv)); d != "" {
		t.Errorf("environments differ beyond the role (-orchestrator +reconciler):\n%s", d)
	}
	// Async invocation: no retry, a tick older than the interval dropped,
	// and no destination (the orchestrator's DLQ is for object events).
	var found bool
	for id, res := range resources("AWS::Lambda::EventInvokeConfig") {
		p := res["Properties"].(map[string]interface{})
		if !cmp.Equal(p["FunctionName"], plain(t, ref(logicalID(c.Recon.Function)))) {
			continue
		}
		found = true
		want := map[string]interface{}{
			"FunctionName":             ref(logicalID(c.Recon.Function)),
			"Qualifier":                "$LATEST",
			"MaximumRetryAttempts":     0,
			"MaximumEventAgeInSeconds": ReconcileEveryMinutes * 60,
		}
		if d := cmp.Diff(plain(t, want), p); d != "" {
			t.Errorf("%s (-want +got):\n%s", id, d)
		}
	}
	if !found {
		t.Error("no EventInvokeConfig for the reconciler: Lambda would retry a failed pass twice")
	}
}
