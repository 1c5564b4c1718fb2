package main

import (
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsautoscaling"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/jsii-runtime-go"

	"github.com/conveyorhq/conveyor/internal/fleet"
	"github.com/conveyorhq/conveyor/internal/lambda"
)

// The fleet: workers from one launch template in an Auto Scaling group,
// grown on the backlog, drained before they leave, stopped (not
// destroyed) into a warm pool when idle.
const (
	// DrainHook is the termination lifecycle hook the workers complete
	// once drained (conveyor worker watch).
	DrainHook = fleet.DefaultHook
	// ReadyHook is the launch lifecycle hook the watch completes once the
	// worker is set up, so a warm-pool instance is not stopped half way.
	ReadyHook = "conveyor-ready"
	// DrainHeartbeatSeconds is how long the group waits for a drain: the
	// watcher's drain timeout plus shipping the logs.
	DrainHeartbeatSeconds = 300
	// ReadyHeartbeatSeconds bounds a worker's first-boot setup.
	ReadyHeartbeatSeconds = 900
	// BacklogPerWorker is the backlog (unfinished jobs) per in-service
	// worker above which the group adds a worker: a worker of the default
	// type has two slots.
	BacklogPerWorker = 2
	// DataVolumeGroupDevice is where a worker of the group has its data
	// volume.
	DataVolumeGroupDevice = "/dev/sdf"
)

// Fleet is the Auto Scaling group of workers and what scales it.
type Fleet struct {
	MaxWorkers      awscdk.CfnParameter
	IdleStopMinutes awscdk.CfnParameter
	// SpotWorkers runs the group on Spot capacity (a mixed instances
	// policy, no warm pool: AWS has none for Spot), off by default.
	SpotWorkers awscdk.CfnParameter
	// DedicatedWorker keeps the seed's standalone instance and its data
	// volume beside the group (a deployment that had them), off by
	// default: the group of one is the dedicated worker.
	DedicatedWorker       awscdk.CfnParameter
	UseSpot, HasDedicated awscdk.CfnCondition
	Template              awsec2.LaunchTemplate
	Group                 awsautoscaling.CfnAutoScalingGroup
	GroupName             *string
	WarmPool              awsautoscaling.CfnWarmPool
	DrainHook             awsautoscaling.CfnLifecycleHook
	ReadyHook             awsautoscaling.CfnLifecycleHook
	ScaleOut              awsautoscaling.CfnScalingPolicy
	BacklogAlarm          awscloudwatch.CfnAlarm
	Endpoint              awsec2.InterfaceVpcEndpoint
}

// newFleet defines the workers' group. It reuses the worker's role, image,
// security group and first-boot script, adds the fleet's own part (the SSM
// agent's concurrency, the drain service, the ready hook) and gives the
// functions and the workers the Auto Scaling calls they make.
func newFleet(stack awscdk.Stack, props StackProps, params *Parameters, net *Network, storage *Storage, w *Worker, orch *Orchestrator, recon *Reconciler) *Fleet {
	f := &Fleet{}
	f.MaxWorkers = awscdk.NewCfnParameter(stack, jsii.String("MaxWorkers"), &awscdk.CfnParameterProps{
		Type:        jsii.String("Number"),
		Default:     jsii.Number(1),
		Description: jsii.String("Most workers running at once (the Auto Scaling group's maximum); they stop into a warm pool when idle, down to none"),
		MinValue:    jsii.Number(0),
		MaxValue:    jsii.Number(100),
	})
	f.IdleStopMinutes = awscdk.NewCfnParameter(stack, jsii.String("IdleStopMinutes"), &awscdk.CfnParameterProps{
		Type:        jsii.String("Number"),
		Default:     jsii.Number(20),
		Description: jsii.String("A worker with no job for this long leaves service, stopped in the warm pool with its volume (0: never)"),
		MinValue:    jsii.Number(0),
		MaxValue:    jsii.Number(1440),
	})
	// A fixed name (the stack's is known at synthesis): the roles' ARNs
	// and the functions name the group, and the group refers to them.
	flag := func(id, desc string) awscdk.CfnParameter {
		return awscdk.NewCfnParameter(stack, jsii.String(id), &awscdk.CfnParameterProps{
			Type: jsii.String("String"), Default: jsii.String("false"), AllowedValues: jsii.Strings("false", "true"), Description: jsii.String(desc),
		})
	}
	f.SpotWorkers = flag("SpotWorkers", "Run the workers on Spot capacity: cheaper, interrupted with two minutes' notice (jobs handed back), no warm pool (idle workers are terminated, their volumes with them)")
	f.DedicatedWorker = flag("DedicatedWorker", "Keep the standalone worker instance and data volume of earlier versions beside the group (to migrate); false removes the instance and keeps the volume (RETAIN)")
	isTrue := func(id string, p awscdk.CfnParameter) awscdk.CfnCondition {
		return awscdk.NewCfnCondition(stack, jsii.String(id), &awscdk.CfnConditionProps{Expression: awscdk.Fn_ConditionEquals(p.ValueAsString(), jsii.String("true"))})
	}
	f.UseSpot = isTrue("UseSpotWorkers", f.SpotWorkers)
	f.HasDedicated = isTrue("HasDedicatedWorker", f.DedicatedWorker)
	retireDedicated(stack, w, f.HasDedicated)

	f.GroupName = jsii.String(*stack.StackName() + "-workers")

	ud := awsec2.UserData_ForLinux(nil)
	ud.AddCommands(jsii.String(fleetPrelude))
	// The same boot script as the standalone worker's (the release the
	// parameter names: binary, deployed configuration and bundle, each
	// checked by hash), but each worker has its own volume, which the
	// prelude finds.
	boot := w.bootValues
	boot.VolumeID = jsii.String("")
	worker := workerUserData(boot)
	for i, l := range worker {
		if *l == "vol=''" { // each worker has its own volume: the prelude found it
			worker[i] = jsii.String(`vol="$CONVEYOR_DATA_VOLUME"`)
		}
	}
	ud.AddCommands(worker...)
	ud.AddCommands(fleetUserData(f.IdleStopMinutes.ValueAsString())...)

	f.Template = awsec2.NewLaunchTemplate(stack, jsii.String("WorkerTemplate"), &awsec2.LaunchTemplateProps{
		InstanceType:            awsec2.NewInstanceType(params.InstanceType.ValueAsString()),
		MachineImage:            &pinnedImage{id: params.WorkerImage.ValueAsString()},
		Role:                    w.Role,
		SecurityGroup:           net.WorkerSecurityGroup,
		UserData:                ud,
		RequireImdsv2:           jsii.Bool(true),
		HttpTokens:              awsec2.LaunchTemplateHttpTokens_REQUIRED,
		HttpEndpoint:            jsii.Bool(true),
		HttpPutResponseHopLimit: jsii.Number(1),
		// The watcher reads the group's name from the instance's tags.
		InstanceMetadataTags: jsii.Bool(true),
		BlockDevices: &[]*awsec2.BlockDevice{
			{DeviceName: jsii.String("/dev/xvda"), Volume: awsec2.BlockDeviceVolume_Ebs(jsii.Number(8), &awsec2.EbsDeviceOptions{
				VolumeType: awsec2.EbsDeviceVolumeType_GP3, Encrypted: jsii.Bool(true), DeleteOnTermination: jsii.Bool(true),
			})},
			// Each worker's own data volume: it lives as long as the
			// instance, which a warm pool keeps (stopped) across idle
			// periods, and survives its termination (kept, like the
			// seed's volume; snapshots restore it).
			{DeviceName: jsii.String(DataVolumeGroupDevice), Volume: awsec2.BlockDeviceVolume_Ebs(jsii.Number(props.DataVolumeGiB), &awsec2.EbsDeviceOptions{
				VolumeType: awsec2.EbsDeviceVolumeType_GP3, Encrypted: jsii.Bool(true), DeleteOnTermination: jsii.Bool(false),
			})},
		},
	})
	tag := func(k, v interface{}) map[string]interface{} { return map[string]interface{}{"Key": k, "Value": v} }
	lt := f.Template.Node().DefaultChild().(awsec2.CfnLaunchTemplate)
	// Launch-time tags: the worker tag (dispatch, IAM conditions) on the
	// instance; the backup tag (BackupTagKey=BackupTagValue, default
	// Backup=True) on its volumes, which puts the data volume
	// under the DLM policy (the root volume is snapshotted too: a few
	// cents a month, and no volume escapes the policy).
	lt.AddPropertyOverride(jsii.String("LaunchTemplateData.TagSpecifications"), []interface{}{
		map[string]interface{}{"ResourceType": "instance", "Tags": []interface{}{tag(WorkerTagKey, WorkerTagValue), tag("Name", "conveyor-worker")}},
		map[string]interface{}{"ResourceType": "volume", "Tags": []interface{}{tag(params.BackupTagKey.ValueAsString(), params.BackupTagValue.ValueAsString()), tag("Name", "conveyor-data")}},
	})

	// The workers call Auto Scaling (drain done, protection, idle stop)
	// from isolated subnets: through its interface endpoint.
	f.Endpoint = net.Vpc.AddInterfaceEndpoint(jsii.String("AutoScalingEndpoint"), &awsec2.InterfaceVpcEndpointOptions{
		Service:           awsec2.InterfaceVpcEndpointAwsService_AUTOSCALING(),
		Subnets:           &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PRIVATE_ISOLATED},
		PrivateDnsEnabled: jsii.Bool(true),
		SecurityGroups:    &[]awsec2.ISecurityGroup{net.EndpointSecurityGroup},
		Open:              jsii.Bool(false),
	})

	var subnets []interface{}
	for _, s := range *net.Vpc.IsolatedSubnets() {
		subnets = append(subnets, s.SubnetId())
	}
	f.Group = awsautoscaling.NewCfnAutoScalingGroup(stack, jsii.String("Workers"), &awsautoscaling.CfnAutoScalingGroupProps{
		AutoScalingGroupName: f.GroupName,
		MinSize:              jsii.String("0"),
		MaxSize:              f.MaxWorkers.ValueAsString(),
		// No DesiredCapacity: CloudFormation leaves the group's, which
		// the orchestrator raises and the idle workers lower.
		LaunchTemplate: &awsautoscaling.CfnAutoScalingGroup_LaunchTemplateSpecificationProperty{
			LaunchTemplateId: f.Template.LaunchTemplateId(),
			Version:          f.Template.LatestVersionNumber(),
		},
		VpcZoneIdentifier: &subnets,
		HealthCheckType:   jsii.String("EC2"),
		Cooldown:          jsii.String("300"),
		// Instance counts for the backlog-per-worker alarm.
		MetricsCollection: &[]interface{}{&awsautoscaling.CfnAutoScalingGroup_MetricsCollectionProperty{
			Granularity: jsii.String("1Minute"), Metrics: jsii.Strings("GroupInServiceInstances"),
		}},
		NewInstancesProtectedFromScaleIn: jsii.Bool(false),
	})
	f.WarmPool = awsautoscaling.NewCfnWarmPool(stack, jsii.String("WorkersWarmPool"), &awsautoscaling.CfnWarmPoolProps{
		AutoScalingGroupName: f.Group.Ref(),
		PoolState:            jsii.String("Stopped"),
		MinSize:              jsii.Number(0),
		// Scale-in returns a worker to the pool, stopped, with its volume.
		InstanceReusePolicy: &awsautoscaling.CfnWarmPool_InstanceReusePolicyProperty{ReuseOnScaleIn: jsii.Bool(true)},
	})
	f.DrainHook = awsautoscaling.NewCfnLifecycleHook(stack, jsii.String("DrainHook"), &awsautoscaling.CfnLifecycleHookProps{
		AutoScalingGroupName: f.Group.Ref(),
		LifecycleHookName:    jsii.String(DrainHook),
		LifecycleTransition:  jsii.String("autoscaling:EC2_INSTANCE_TERMINATING"),
		HeartbeatTimeout:     jsii.Number(DrainHeartbeatSeconds),
		// A worker that cannot say it drained is let go at the timeout:
		// its jobs' leases lapse and they are taken over.
		DefaultResult: jsii.String("CONTINUE"),
	})
	f.ReadyHook = awsautoscaling.NewCfnLifecycleHook(stack, jsii.String("ReadyHook"), &awsautoscaling.CfnLifecycleHookProps{
		AutoScalingGroupName: f.Group.Ref(),
		LifecycleHookName:    jsii.String(ReadyHook),
		LifecycleTransition:  jsii.String("autoscaling:EC2_INSTANCE_LAUNCHING"),
		HeartbeatTimeout:     jsii.Number(ReadyHeartbeatSeconds),
		DefaultResult:        jsii.String("ABANDON"),
	})

	// Scale out on the backlog per in-service worker (the reconciler's
	// Backlog metric, one point per pass); scale-in is the idle workers'
	// own (conveyor worker watch --idle-stop), which never picks a busy
	// worker.
	f.ScaleOut = awsautoscaling.NewCfnScalingPolicy(stack, jsii.String("ScaleOutOnBacklog"), &awsautoscaling.CfnScalingPolicyProps{
		AutoScalingGroupName:    f.Group.Ref(),
		PolicyType:              jsii.String("StepScaling"),
		AdjustmentType:          jsii.String("ChangeInCapacity"),
		MetricAggregationType:   jsii.String("Maximum"),
		EstimatedInstanceWarmup: jsii.Number(180),
		StepAdjustments: &[]interface{}{
			&awsautoscaling.CfnScalingPolicy_StepAdjustmentProperty{MetricIntervalLowerBound: jsii.Number(0), MetricIntervalUpperBound: jsii.Number(2 * BacklogPerWorker), ScalingAdjustment: jsii.Number(1)},
			&awsautoscaling.CfnScalingPolicy_StepAdjustmentProperty{MetricIntervalLowerBound: jsii.Number(2 * BacklogPerWorker), ScalingAdjustment: jsii.Number(2)},
		},
	})
	metric := func(id, ns, name, dimName string, dimValue *string, stat string) *awscloudwatch.CfnAlarm_MetricDataQueryProperty {
		return &awscloudwatch.CfnAlarm_MetricDataQueryProperty{
			Id: jsii.String(id), ReturnData: jsii.Bool(false),
			MetricStat: &awscloudwatch.CfnAlarm_MetricStatProperty{
				Metric: &awscloudwatch.CfnAlarm_MetricProperty{Namespace: jsii.String(ns), MetricName: jsii.String(name),
					Dimensions: &[]interface{}{&awscloudwatch.CfnAlarm_DimensionProperty{Name: jsii.String(dimName), Value: dimValue}}},
				Period: jsii.Number(ReconcileEveryMinutes * 60), Stat: jsii.String(stat),
			},
		}
	}
	f.BacklogAlarm = awscloudwatch.NewCfnAlarm(stack, jsii.String("BacklogAlarm"), &awscloudwatch.CfnAlarmProps{
		AlarmDescription:   jsii.String("Conveyor: more unfinished jobs per in-service worker than a worker has slots; adds workers"),
		ComparisonOperator: jsii.String("GreaterThanThreshold"),
		Threshold:          jsii.Number(BacklogPerWorker),
		EvaluationPeriods:  jsii.Number(1),
		TreatMissingData:   jsii.String("notBreaching"),
		Metrics: &[]interface{}{
			metric("backlog", lambda.MetricNamespace, lambda.MetricBacklog, lambda.MetricDimension, recon.Function.FunctionName(), "Maximum"),
			metric("workers", "AWS/AutoScaling", "GroupInServiceInstances", "AutoScalingGroupName", f.Group.Ref(), "Average"),
			&awscloudwatch.CfnAlarm_MetricDataQueryProperty{Id: jsii.String("perworker"), Expression: jsii.String("IF(workers > 0, backlog / workers, backlog)"),
				Label: jsii.String("Unfinished jobs per in-service worker"), ReturnData: jsii.Bool(true)},
		},
		AlarmActions: &[]interface{}{f.ScaleOut.Ref()},
	})

	useSpot(f, lt)
	grantFleet(stack, f, w, storage, orch, recon)
	suppressFleetFindings(stack, f, w, orch, recon)
	// The functions bring a stopped fleet up by its desired capacity.
	orch.Function.AddEnvironment(jsii.String(lambda.EnvWorkerGroup), f.GroupName, nil)
	recon.Function.AddEnvironment(jsii.String(lambda.EnvWorkerGroup), f.GroupName, nil)
	awscdk.NewCfnOutput(stack, jsii.String("WorkerGroupName"), &awscdk.CfnOutputProps{
		Description: jsii.String("The workers' Auto Scaling group (MaxWorkers; idle workers stop into its warm pool)"),
		Value:       f.GroupName,
	})
	return f
}

// retireDedicated puts the seed's standalone worker (instance, its
// instance profile, data volume and attachment, and their outputs) under
// the DedicatedWorker condition: by default the group is the worker. The
// volume is RETAIN, so leaving the condition false keeps it in the
// account, detached.
func retireDedicated(stack awscdk.Stack, w *Worker, cond awscdk.CfnCondition) {
	var els []constructs.IConstruct
	els = append(els, w.Instance.Node().DefaultChild(), w.DataVolume.Node().DefaultChild(), stack.Node().FindChild(jsii.String("DataVolumeAttachment")))
	if p := w.Instance.Node().TryFindChild(jsii.String("InstanceProfile")); p != nil {
		els = append(els, p)
	}
	for _, el := range els {
		el.(awscdk.CfnResource).CfnOptions().SetCondition(cond)
	}
	for _, id := range []string{"WorkerInstanceId", "DataVolumeId"} {
		if o, ok := stack.Node().TryFindChild(jsii.String(id)).(awscdk.CfnOutput); ok {
			o.SetCondition(cond)
		}
	}
}

// useSpot makes the group run on Spot capacity under the UseSpot
// condition: a mixed instances policy (all Spot, price-capacity-optimized)
// instead of the launch template alone, no warm pool (AWS has none for
// Spot: idle workers are terminated), and data volumes deleted with
// their instances (a Spot worker is disposable: its logs are shipped when
// it drains).
func useSpot(f *Fleet, lt awsec2.CfnLaunchTemplate) {
	spec := map[string]interface{}{"LaunchTemplateId": f.Template.LaunchTemplateId(), "Version": f.Template.LatestVersionNumber()}
	noValue := awscdk.Aws_NO_VALUE()
	f.Group.AddPropertyOverride(jsii.String("LaunchTemplate"), awscdk.Fn_ConditionIf(f.UseSpot.LogicalId(), noValue, spec))
	f.Group.AddPropertyOverride(jsii.String("MixedInstancesPolicy"), awscdk.Fn_ConditionIf(f.UseSpot.LogicalId(), map[string]interface{}{
		"LaunchTemplate": map[string]interface{}{"LaunchTemplateSpecification": spec},
		"InstancesDistribution": map[string]interface{}{
			"OnDemandBaseCapacity":                0,
			"OnDemandPercentageAboveBaseCapacity": 0,
			"SpotAllocationStrategy":              "price-capacity-optimized",
		},
	}, noValue))
	f.WarmPool.CfnOptions().SetCondition(awscdk.NewCfnCondition(f.Group.Stack(), jsii.String("UseWarmPool"), &awscdk.CfnConditionProps{
		Expression: awscdk.Fn_ConditionNot(f.UseSpot),
	}))
	lt.AddPropertyOverride(jsii.String("LaunchTemplateData.BlockDeviceMappings.1.Ebs.DeleteOnTermination"),
		awscdk.Fn_ConditionIf(f.UseSpot.LogicalId(), true, false))
}

// groupArn is the ARN of the workers' group, whatever its generated ID.
func groupArn(stack awscdk.Stack, f *Fleet) *string {
	return awscdk.Fn_Join(jsii.String(""), &[]*string{
		jsii.String("arn:"), stack.Partition(), jsii.String(":autoscaling:"), stack.Region(), jsii.String(":"), stack.Account(),
		jsii.String(":autoScalingGroup:*:autoScalingGroupName/"), f.GroupName,
	})
}

// grantFleet gives each role the Auto Scaling and SSM calls the fleet adds.
func grantFleet(stack awscdk.Stack, f *Fleet, w *Worker, storage *Storage, orch *Orchestrator, recon *Reconciler) {
	group := groupArn(stack, f)
	for _, r := range []awsiam.Role{orch.Role, recon.Role} {
		// Dispatch by load: the commands still executing on each worker
		// (ListCommandInvocations has no resource type), and the group's
		// desired capacity (Describe has none either).
		r.AddToPolicy(statement([]string{"ssm:ListCommandInvocations", "autoscaling:DescribeAutoScalingGroups"}, jsii.String("*")))
		// A stopped fleet is brought up by raising its desired capacity:
		// this group only.
		r.AddToPolicy(statement([]string{"autoscaling:SetDesiredCapacity"}, group))
	}
	// The worker completes its own lifecycle actions (drained, ready),
	// holds scale-in protection while jobs run, and lowers the desired
	// capacity when idle: on its own group only.
	w.Role.AddToPolicy(statement([]string{
		"autoscaling:CompleteLifecycleAction", "autoscaling:SetInstanceProtection", "autoscaling:SetDesiredCapacity",
	}, group))
	w.Role.AddToPolicy(statement([]string{"autoscaling:DescribeAutoScalingGroups"}, jsii.String("*")))
	// A worker whose slot frees up takes a job waiting for one: it lists
	// the unfinished jobs' markers (active/ only) and reads their records.
	w.Role.AddToPolicy(conditional([]string{"s3:ListBucket"},
		map[string]interface{}{"StringEquals": map[string]interface{}{"s3:prefix": ActiveIndexPrefix}}, storage.State.BucketArn()))
}

// suppressFleetFindings records why cdk-nag findings on the fleet do not
// apply (see nag.go for the stack's others).
func suppressFleetFindings(stack awscdk.Stack, f *Fleet, w *Worker, orch *Orchestrator, recon *Reconciler) {
	suppress := func(scope constructs.IConstruct, id, reason string, appliesTo ...interface{}) {
		s := &cdknag.NagPackSuppression{Id: jsii.String(id), Reason: jsii.String(reason)}
		if len(appliesTo) > 0 {
			s.AppliesTo = &appliesTo
		}
		cdknag.NagSuppressions_AddResourceSuppressions(scope, &[]*cdknag.NagPackSuppression{s}, jsii.Bool(true))
	}
	suppress(f.Group, "AwsSolutions-AS3",
		"Scaling events are acted on by the workers themselves (lifecycle hooks: ready, drain) and visible in the group's activity history and CloudWatch metrics; an SNS topic nobody subscribes to would add a resource and no insight.")
	group := "Resource::arn:<AWS::Partition>:autoscaling:<AWS::Region>:<AWS::AccountId>:autoScalingGroup:*:autoScalingGroupName/" + *f.GroupName
	for _, r := range []awsiam.Role{w.Role, orch.Role, recon.Role} {
		suppress(r, "AwsSolutions-IAM5",
			"The workers' Auto Scaling group by name; the '*' is the group's generated UUID, unknown until it exists. See also nag.go for this role's other wildcards.",
			group)
	}
	// cdk-nag's EC26 cannot evaluate an instance without a launch
	// template once the stack has one (it reads the instance's template
	// name); the seed worker's volumes are encrypted (TestWorkerInstance).
	suppress(w.Instance, "AwsSolutions-EC26",
		"Both EBS volumes of the worker instance are encrypted (asserted by TestWorkerInstance and TestDataVolume); the rule fails to evaluate an instance without a launch template in a stack that has one.")
}
