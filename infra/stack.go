package main

import (
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// Defaults of StackProps.
const (
	DefaultLambdaAssetDir      = "../dist/lambda"
	DefaultWorkerBinary        = "../dist/linux-arm64/conveyor"
	DefaultSSMDocumentPath     = "../deploy/ssm/conveyor-run-job.yaml"
	DefaultDataVolumeGiB       = 20
	DefaultReservedConcurrency = 5
	DefaultExecutionTimeout    = time.Hour
)

// Worker tag: the Lambda may send commands to, and start, only instances
// carrying it, and finds its worker by it.
const (
	WorkerTagKey   = "conveyor:role"
	WorkerTagValue = "worker"
)

// Where the worker keeps its volume and its config file.
const (
	VolumeMountPoint = "/var/lib/conveyor"
	WorkerConfigPath = "/etc/conveyor/conveyor.yaml"
)

// StackProps configures the Conveyor stack. Paths are relative to the
// infra/ directory (where `cdk` runs). Everything an operator may change
// after deployment is a CloudFormation parameter instead (see Parameters).
type StackProps struct {
	awscdk.StackProps
	// LambdaAssetDir is the directory holding the Lambda's `bootstrap`
	// (built by `make -C .. build-lambda`).
	LambdaAssetDir string
	// WorkerBinary is the linux/arm64 `conveyor` binary for the worker.
	WorkerBinary string
	// SSMDocumentPath is the YAML SSM Command document run on the worker.
	SSMDocumentPath string
	// DataVolumeGiB is the size of the worker's gp3 data volume.
	DataVolumeGiB float64
	// ReservedConcurrency caps the orchestrator Lambda's concurrency.
	ReservedConcurrency float64
	// ExecutionTimeout is the SSM command's execution timeout for one job.
	ExecutionTimeout time.Duration
	// ConfigPath is the conveyor.yaml deployed (the CDK context value
	// "config"); "" deploys the defaults. See DeployedConfig.
	ConfigPath string
	// WorkerImageID is the pinned AMI, WorkerImageId's default (the CDK
	// context value "workerImageId", in cdk.json); "" for no default.
	WorkerImageID string
}

// WithDefaults returns p with every zero field set to its default.
func (p StackProps) WithDefaults() StackProps {
	if p.LambdaAssetDir == "" {
		p.LambdaAssetDir = DefaultLambdaAssetDir
	}
	if p.WorkerBinary == "" {
		p.WorkerBinary = DefaultWorkerBinary
	}
	if p.SSMDocumentPath == "" {
		p.SSMDocumentPath = DefaultSSMDocumentPath
	}
	if p.DataVolumeGiB == 0 {
		p.DataVolumeGiB = DefaultDataVolumeGiB
	}
	if p.ReservedConcurrency == 0 {
		p.ReservedConcurrency = DefaultReservedConcurrency
	}
	if p.ExecutionTimeout == 0 {
		p.ExecutionTimeout = DefaultExecutionTimeout
	}
	return p
}

// Conveyor is the synthesized stack and the constructs tests and outputs
// refer to.
type Conveyor struct {
	Stack     awscdk.Stack
	Params    *Parameters
	Config    *DeployedConfig
	Storage   *Storage
	Network   *Network
	Worker    *Worker
	Orch      *Orchestrator
	Recon     *Reconciler
	Snapshots *Snapshots
	Fleet     *Fleet
	Alarms    *Alarms
}

// NewConveyorStack defines the whole Conveyor deployment in one stack.
// It panics (as CDK constructs do) when an asset or the SSM document is
// missing or invalid.
func NewConveyorStack(scope constructs.Construct, id string, props StackProps) *Conveyor {
	props = props.WithDefaults()
	sp := props.StackProps
	if sp.Description == nil {
		sp.Description = jsii.String("Conveyor: S3-triggered file processing on a dedicated EC2 worker (infra/)")
	}
	stack := awscdk.NewStack(scope, jsii.String(id), &sp)

	c := &Conveyor{Stack: stack}
	c.Params = newParameters(stack, props)
	c.Storage = newStorage(stack, c.Params)
	c.Network = newNetwork(stack, c.Storage)
	doc := newSSMDocument(stack, props.SSMDocumentPath)
	c.Config = newDeployedConfig(stack, props)
	c.Worker = newWorker(stack, props, c.Params, c.Config, c.Network, c.Storage)
	c.Snapshots = newSnapshotPolicy(stack, c.Params)
	code := lambdaCode(props) // one asset, both functions
	c.Orch = newOrchestrator(stack, props, c.Params, c.Config, c.Storage, c.Worker, doc, code)
	c.Recon = newReconciler(stack, props, c.Params, c.Config, c.Storage, c.Worker, doc, code)
	addOutputs(stack, c)
	c.Fleet = newFleet(stack, props, c.Params, c.Network, c.Storage, c.Worker, c.Orch, c.Recon)
	c.Alarms = newAlarms(stack, c.Storage, c.Orch, c.Recon, c.Fleet)
	addNagSuppressions(stack, c)
	return c
}

// addOutputs exports what an operator needs after `cdk deploy`.
func addOutputs(stack awscdk.Stack, c *Conveyor) {
	out := func(id, desc string, value *string) {
		awscdk.NewCfnOutput(stack, jsii.String(id), &awscdk.CfnOutputProps{Description: jsii.String(desc), Value: value})
	}
	out("InputBucketName", "Upload files here to process them", c.Storage.Input.BucketName())
	out("OutputBucketName", "Processed results, under <input key>/", c.Storage.Output.BucketName())
	out("StateBucketName", "Job records (jobs/), the job index (active/, done/), job logs (logs/)", c.Storage.State.BucketName())
	out("JobLogGroupName", "CloudWatch Logs group of job logs (a stream per attempt: <job>/<attempt>)", c.Worker.JobLogs.LogGroupName())
	out("ReleaseParameterName", "The workers' release (binary, configuration, bundle, each with its SHA-256); the update association installs it", jsii.String(c.Worker.Release.Name))
	out("LogBucketName", "S3 server access logs and VPC flow logs", c.Storage.Logs.BucketName())
	out("WorkerInstanceId", "The EC2 worker (SSM managed, no inbound access)", c.Worker.Instance.InstanceId())
	out("DataVolumeId", "The worker's data volume (RETAIN, snapshotted daily by DLM)", c.Worker.DataVolume.VolumeId())
	out("OrchestratorFunctionName", "The orchestrator Lambda", c.Orch.Function.FunctionName())
	out("ReconcilerFunctionName", "The reconciler Lambda (every 15 minutes; metrics in namespace Conveyor)", c.Recon.Function.FunctionName())
	out("DeadLetterQueueUrl", "Events the orchestrator failed on after its retries", c.Orch.DLQ.QueueUrl())
	out("SampleUploadCommand", "Upload a file to start a job",
		awscdk.Fn_Join(jsii.String(""), &[]*string{jsii.String("aws s3 cp ./report.csv s3://"), c.Storage.Input.BucketName(), jsii.String("/")}))
}
