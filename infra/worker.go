package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3assets"
	"github.com/aws/jsii-runtime-go"
)

// DataVolumeDevice is the device name the data volume is attached as. On
// Nitro instances it shows up as NVMe, so user data finds it by serial.
const DataVolumeDevice = "/dev/sdf"

// WorkerImageParameter is AWS's public SSM parameter for the latest Amazon
// Linux 2023 arm64 AMI (SSM agent and AWS CLI preinstalled): what `make
// upgrade-ami` pins WorkerImageId to.
const WorkerImageParameter = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"

// Worker is the EC2 instance that runs jobs and its persistent data volume.
type Worker struct {
	Instance   awsec2.Instance
	Role       awsiam.Role
	DataVolume awsec2.Volume
	// CommandLogs receives the output of SSM commands (the Lambda names it
	// in SendCommand; the agent on the worker writes it).
	CommandLogs awslogs.LogGroup
	// JobLogs receives each attempt's part of a job's log (logs.group;
	// stream <job>/<attempt>), as the state bucket's logs/ receives the
	// whole log when an attempt ends.
	JobLogs awslogs.LogGroup
	Binary  awss3assets.Asset
	// Release is what the deploy ships to the workers (release.go).
	Release *Release
	// AssetsPolicy lets the role read the release's asset objects.
	AssetsPolicy awsiam.Policy
	// bootValues are what the boot script embeds (the release parameter's
	// name, the buckets, the volume); the fleet's workers boot from the same.
	bootValues userDataValues
}

func newWorker(stack awscdk.Stack, props StackProps, params *Parameters, cfg *DeployedConfig, net *Network, storage *Storage) *Worker {
	w := &Worker{}
	w.Binary = awss3assets.NewAsset(stack, jsii.String("WorkerBinary"), &awss3assets.AssetProps{Path: jsii.String(props.WorkerBinary)})
	w.CommandLogs = awslogs.NewLogGroup(stack, jsii.String("CommandLogs"), &awslogs.LogGroupProps{
		Retention:     awslogs.RetentionDays_ONE_MONTH,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	w.JobLogs = awslogs.NewLogGroup(stack, jsii.String("JobLogs"), &awslogs.LogGroupProps{
		Retention: awslogs.RetentionDays_ONE_MONTH,
		// The whole log of every attempt is also in the state bucket
		// (logs/, 90 days): the group is for following and searching.
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	w.Role = awsiam.NewRole(stack, jsii.String("WorkerRole"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("ec2.amazonaws.com"), nil),
		Description: jsii.String("Conveyor worker: read input, write output and job records, SSM agent"),
	})
	files := []releaseFile{
		{kind: "binary", url: w.Binary.S3ObjectUrl(), sha256: fileSHA256(props.WorkerBinary)},
		{kind: "config", url: cfg.ConfigAsset.S3ObjectUrl(), sha256: cfg.ConfigSHA256},
	}
	if cfg.BundleAsset != nil {
		files = append(files, releaseFile{kind: "bundle", url: cfg.BundleAsset.S3ObjectUrl(), sha256: cfg.BundleSHA256, dest: cfg.BundleArchive})
	}
	w.Release = newRelease(stack, files)
	addWorkerPolicy(stack, w, cfg, storage)

	az := net.WorkerSubnet.AvailabilityZone()
	w.Instance = awsec2.NewInstance(stack, jsii.String("Worker"), &awsec2.InstanceProps{
		Vpc:          net.Vpc,
		VpcSubnets:   &awsec2.SubnetSelection{Subnets: &[]awsec2.ISubnet{net.WorkerSubnet}},
		InstanceType: awsec2.NewInstanceType(params.InstanceType.ValueAsString()),
		// Pinned (image.go): never moved by a deploy of its own accord.
		MachineImage:  &pinnedImage{id: params.WorkerImage.ValueAsString()},
		Role:          w.Role,
		SecurityGroup: net.WorkerSecurityGroup,
		HttpTokens:    awsec2.HttpTokens_REQUIRED,
		HttpEndpoint:  jsii.Bool(true),
		// The default hop limit (1) keeps IMDS credentials off containers.
		HttpPutResponseHopLimit: jsii.Number(1),
		BlockDevices: &[]*awsec2.BlockDevice{{
			DeviceName: jsii.String("/dev/xvda"),
			Volume: awsec2.BlockDeviceVolume_Ebs(jsii.Number(8), &awsec2.EbsDeviceOptions{
				VolumeType:          awsec2.EbsDeviceVolumeType_GP3,
				Encrypted:           jsii.Bool(true),
				DeleteOnTermination: jsii.Bool(true),
			}),
		}},
		// User data does not change with a release (release.go); were it
		// to change, the instance is stopped and started, not replaced
		// (the data volume stays attached to this one).
		UserDataCausesReplacement:       jsii.Bool(false),
		PropagateTagsToVolumeOnCreation: jsii.Bool(false),
	})
	// The validation resolves WorkerImageId to its default, the AMI
	// cdk.json pins: a literal on purpose (image.go), never moved by a
	// deploy of its own accord.
	awscdk.Validations_Of(w.Instance).Acknowledge(&awscdk.Acknowledgment{
		Id:     jsii.String("CloudFormation-Validate::W9010"),
		Reason: jsii.String("The AMI is pinned on purpose: the WorkerImageId parameter, whose default is the AMI cdk.json pins (make upgrade-ami moves it)."),
	})
	awscdk.Tags_Of(w.Instance).Add(jsii.String(WorkerTagKey), jsii.String(WorkerTagValue), nil)
	awscdk.Tags_Of(w.Instance).Add(jsii.String("Name"), jsii.String("conveyor-worker"), nil)

	w.DataVolume = awsec2.NewVolume(stack, jsii.String("DataVolume"), &awsec2.VolumeProps{
		AvailabilityZone: az,
		Size:             awscdk.Size_Gibibytes(jsii.Number(props.DataVolumeGiB)),
		VolumeType:       awsec2.EbsDeviceVolumeType_GP3,
		Encrypted:        jsii.Bool(true),
		// The volume holds the logs and the journal: it survives the stack
		// and the instance (restore a snapshot to get it back otherwise).
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})
	awscdk.Tags_Of(w.DataVolume).Add(params.BackupTagKey.ValueAsString(), params.BackupTagValue.ValueAsString(), nil)
	awscdk.Tags_Of(w.DataVolume).Add(jsii.String("Name"), jsii.String("conveyor-data"), nil)
	awsec2.NewCfnVolumeAttachment(stack, jsii.String("DataVolumeAttachment"), &awsec2.CfnVolumeAttachmentProps{
		InstanceId: w.Instance.InstanceId(),
		VolumeId:   w.DataVolume.VolumeId(),
		Device:     jsii.String(DataVolumeDevice),
	})

	v := userDataValues{
		Region:           stack.Region(),
		InputBucket:      storage.Input.BucketName(),
		OutputBucket:     storage.Output.BucketName(),
		StateBucket:      storage.State.BucketName(),
		VolumeID:         w.DataVolume.VolumeId(),
		JobLogGroup:      w.JobLogs.LogGroupName(),
		ReleaseParameter: jsii.String(w.Release.Name),
	}
	w.bootValues = v
	w.Instance.UserData().AddCommands(workerUserData(v)...)
	return w
}

// addWorkerPolicy gives the worker role exactly what a job needs.
func addWorkerPolicy(stack awscdk.Stack, w *Worker, cfg *DeployedConfig, storage *Storage) {
	add := func(s awsiam.PolicyStatement) { w.Role.AddToPolicy(s) }
	// Read the input object of a job (by version ID: GetObjectVersion),
	// and HEAD its key to learn whether that version is still current.
	add(statement([]string{"s3:GetObject", "s3:GetObjectVersion"}, objects(storage.Input.BucketArn(), "")))
	// Without ListBucket, a HEAD of a deleted key answers 403, not 404, and
	// a job of a deleted input could not tell it was superseded.
	add(statement([]string{"s3:ListBucket"}, storage.Input.BucketArn()))
	// Publish results with conditional writes; multipart uploads are
	// authorized by PutObject, and aborting a failed one needs
	// AbortMultipartUpload. GetObject (HEAD of an output another attempt
	// wrote, and required by conditional deletes) and DeleteObject remove
	// the outputs of older versions and take back a superseded attempt's.
	add(statement([]string{"s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObject", "s3:DeleteObject"}, objects(storage.Output.BucketArn(), "")))
	// List a key's outputs before publishing (prefix <key>/, delimiter /).
	add(statement([]string{"s3:ListBucket"}, storage.Output.BucketArn()))
	// Claim and update job records (conditional writes on jobs/).
	add(statement([]string{"s3:GetObject", "s3:PutObject"}, objects(storage.State.BucketArn(), JobRecordPrefix)))
	// A record written in a terminal state carries the tag
	// conveyor-finished=true, which the state bucket's lifecycle rule
	// expires; a PutObject with tags is also authorized as PutObjectTagging.
	add(statement([]string{"s3:PutObjectTagging"}, objects(storage.State.BucketArn(), JobRecordPrefix)))
	// The job index: a job the worker finishes gets its done marker and
	// loses its active marker.
	add(statement([]string{"s3:PutObject", "s3:DeleteObject"}, objects(storage.State.BucketArn(), ActiveIndexPrefix), objects(storage.State.BucketArn(), DoneIndexPrefix)))
	// Upload job logs next to the records.
	add(statement([]string{"s3:PutObject"}, objects(storage.State.BucketArn(), JobLogPrefix)))
	// The release manifest and the update association (release.go).
	grantRelease(stack, w.Role, w.Release)
	// The boot script and the update download the worker binary, the
	// worker's configuration and the processor bundle the manifest names:
	// these asset objects only, not the whole CDK asset bucket. In a
	// policy of their own, which the update association waits for (the
	// default policy names the association: it cannot wait for that one).
	assets := []*string{w.Binary.Bucket().ArnForObjects(w.Binary.S3ObjectKey()), cfg.ConfigAsset.Bucket().ArnForObjects(cfg.ConfigAsset.S3ObjectKey())}
	if cfg.BundleAsset != nil {
		assets = append(assets, cfg.BundleAsset.Bucket().ArnForObjects(cfg.BundleAsset.S3ObjectKey()))
	}
	w.AssetsPolicy = awsiam.NewPolicy(stack, jsii.String("WorkerAssetsPolicy"), &awsiam.PolicyProps{
		Roles:      &[]awsiam.IRole{w.Role},
		Statements: &[]awsiam.PolicyStatement{statement([]string{"s3:GetObject"}, assets...)},
	})
	w.Release.Association.AddResourceDependency(w.AssetsPolicy.Node().DefaultChild().(awscdk.CfnResource),
		jsii.String("the update reads the release's assets with the worker role"))
	// worker run sends job logs to the job log group: a stream per
	// attempt (the group exists: no CreateLogGroup).
	add(statement([]string{"logs:CreateLogStream", "logs:PutLogEvents"}, w.JobLogs.LogGroupArn()))
	// worker run puts job events (events.bus) on the default bus only.
	add(statement([]string{"events:PutEvents"}, eventBusArn(stack)))
	// The SSM agent streams command output to the command log group
	// (CreateLogGroup is called even when the group exists).
	add(statement([]string{"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"},
		w.CommandLogs.LogGroupArn()))
	// SSM agent registration and heartbeat: scoped to EC2 instances in this
	// account and region (the instance ID exists only after the role).
	add(statement([]string{"ssm:UpdateInstanceInformation"}, workerInstancesArn(stack)))
	// SSM agent command and session channels: these actions have no
	// resource type, so "*" is the only possible resource (UnscopableActions).
	add(statement([]string{
		"ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
		"ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel",
		"ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage", "ec2messages:FailMessage",
		"ec2messages:GetEndpoint", "ec2messages:GetMessages", "ec2messages:SendReply",
	}, jsii.String("*")))
}
