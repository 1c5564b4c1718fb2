package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambdadestinations"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3assets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3notifications"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsssm"
	"github.com/aws/jsii-runtime-go"
)

// Asynchronous invocation settings of the orchestrator. Its work is
// idempotent (conditional job-record writes) and the reconciler catches
// anything lost, so a few retries within hours are enough.
const (
	OrchestratorRetryAttempts = 2
	OrchestratorMaxEventAge   = 6 // hours
	// ReconcileEveryMinutes is how often an EventBridge schedule invokes
	// the orchestrator to reconcile: objects whose event was lost get their
	// job, and jobs whose dispatch or worker was lost are sent again.
	ReconcileEveryMinutes = 15
)

// Orchestrator is the Lambda that turns object-created events into jobs.
type Orchestrator struct {
	Function awslambda.Function
	Role     awsiam.Role
	LogGroup awslogs.LogGroup
	DLQ      awssqs.Queue
	// Reconcile is the schedule that invokes Function to reconcile.
	Reconcile awsevents.Rule
}

func newOrchestrator(stack awscdk.Stack, props StackProps, params *Parameters, storage *Storage, worker *Worker, doc awsssm.CfnDocument) *Orchestrator {
	o := &Orchestrator{}
	o.LogGroup = awslogs.NewLogGroup(stack, jsii.String("OrchestratorLogs"), &awslogs.LogGroupProps{
		Retention:     awslogs.RetentionDays_ONE_MONTH,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	o.DLQ = awssqs.NewQueue(stack, jsii.String("OrchestratorDLQ"), &awssqs.QueueProps{
		Encryption:      awssqs.QueueEncryption_SQS_MANAGED,
		EnforceSSL:      jsii.Bool(true),
		RetentionPeriod: awscdk.Duration_Days(jsii.Number(14)),
	})
	o.Role = awsiam.NewRole(stack, jsii.String("OrchestratorRole"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
		Description: jsii.String("Conveyor orchestrator: job records, SSM SendCommand to the worker"),
	})
	docArn := stack.FormatArn(&awscdk.ArnComponents{Service: jsii.String("ssm"), Resource: jsii.String("document"), ResourceName: doc.Ref()})
	addOrchestratorPolicy(stack, o, storage, docArn)

	o.Function = awslambda.NewFunction(stack, jsii.String("Orchestrator"), &awslambda.FunctionProps{
		Description:  jsii.String("Conveyor orchestrator: S3 ObjectCreated -> job record -> SSM SendCommand"),
		Runtime:      awslambda.Runtime_PROVIDED_AL2023(),
		Architecture: awslambda.Architecture_ARM_64(),
		Handler:      jsii.String("bootstrap"),
		// build-lambda also leaves bootstrap.zip beside bootstrap; the
		// asset is the directory, zipped by CDK, so the zip is left out.
		Code: awslambda.Code_FromAsset(jsii.String(props.LambdaAssetDir), &awss3assets.AssetOptions{
			Exclude: jsii.Strings("*.zip"),
		}),
		Role:                         o.Role,
		LogGroup:                     o.LogGroup,
		MemorySize:                   jsii.Number(256),
		Timeout:                      awscdk.Duration_Seconds(jsii.Number(30)),
		ReservedConcurrentExecutions: jsii.Number(props.ReservedConcurrency),
		RetryAttempts:                jsii.Number(OrchestratorRetryAttempts),
		MaxEventAge:                  awscdk.Duration_Hours(jsii.Number(OrchestratorMaxEventAge)),
		// Events still failing after the retries land in the DLQ (the
		// destination's send permission is added to the role by CDK).
		OnFailure: awslambdadestinations.NewSqsDestination(o.DLQ),
		Environment: &map[string]*string{
			"CONVEYOR_INPUT_BUCKET":  storage.Input.BucketName(),
			"CONVEYOR_OUTPUT_BUCKET": storage.Output.BucketName(),
			"CONVEYOR_STATE_BUCKET":  storage.State.BucketName(),
			"CONVEYOR_SSM_DOCUMENT":  doc.Ref(),
			// Workers are chosen by tag among those online in SSM, so more
			// can be added behind the same orchestrator.
			"CONVEYOR_WORKER_TAG_KEY":   jsii.String(WorkerTagKey),
			"CONVEYOR_WORKER_TAG_VALUE": jsii.String(WorkerTagValue),
			"CONVEYOR_SSM_LOG_GROUP":    worker.CommandLogs.LogGroupName(),
			"CONVEYOR_FILTER_PREFIXES":  params.FilterPrefix.ValueAsString(),
			"CONVEYOR_FILTER_SUFFIXES":  params.FilterSuffix.ValueAsString(),
			// A Go duration, as the Lambda reads it.
			"CONVEYOR_EXECUTION_TIMEOUT": jsii.String(props.ExecutionTimeout.String()),
			// Versioning is on: jobs key on version IDs, and the
			// reconciler lists versions.
			"CONVEYOR_INPUT_VERSIONED": jsii.String("true"),
		},
	})

	storage.Input.AddEventNotification(awss3.EventType_OBJECT_CREATED, awss3notifications.NewLambdaDestination(o.Function))
	filterNotification(stack, storage.Input, params)
	o.Reconcile = awsevents.NewRule(stack, jsii.String("Reconcile"), &awsevents.RuleProps{
		Description: jsii.String("Invokes the orchestrator to reconcile input objects and job records"),
		Schedule:    awsevents.Schedule_Rate(awscdk.Duration_Minutes(jsii.Number(ReconcileEveryMinutes))),
		Targets:     &[]awsevents.IRuleTarget{awseventstargets.NewLambdaFunction(o.Function, &awseventstargets.LambdaFunctionProps{RetryAttempts: jsii.Number(0)})},
	})
	return o
}

// addOrchestratorPolicy gives the orchestrator role exactly what it needs.
func addOrchestratorPolicy(stack awscdk.Stack, o *Orchestrator, storage *Storage, docArn *string) {
	add := func(s awsiam.PolicyStatement) { o.Role.AddToPolicy(s) }
	// Send Conveyor's document, and no other.
	add(statement([]string{"ssm:SendCommand"}, docArn))
	// ...to instances tagged as Conveyor workers only. SendCommand is
	// authorized against both the document and the instances, so each is
	// its own statement (the document carries no worker tag).
	add(conditional([]string{"ssm:SendCommand"},
		map[string]interface{}{"StringEquals": map[string]interface{}{"ssm:resourceTag/" + WorkerTagKey: WorkerTagValue}},
		workerInstancesArn(stack)))
	// Start a stopped worker, and only a Conveyor worker.
	add(conditional([]string{"ec2:StartInstances"},
		map[string]interface{}{"StringEquals": map[string]interface{}{"aws:ResourceTag/" + WorkerTagKey: WorkerTagValue}},
		workerInstancesArn(stack)))
	// Is the worker online (SSM) and running (EC2)? Neither action has a
	// resource type: "*" is the only resource they accept.
	add(statement([]string{"ssm:DescribeInstanceInformation", "ec2:DescribeInstances"}, jsii.String("*")))
	// Create, read and update job records (conditional writes), jobs/ only.
	add(statement([]string{"s3:GetObject", "s3:PutObject"}, objects(storage.State.BucketArn(), JobRecordPrefix)))
	// List job records (the reconciler), jobs/ only.
	add(conditional([]string{"s3:ListBucket"},
		map[string]interface{}{"StringLike": map[string]interface{}{"s3:prefix": JobRecordPrefix + "*"}},
		storage.State.BucketArn()))
	// HEAD the input object for its size and version (HeadObject is
	// authorized as GetObject/GetObjectVersion; the code never reads data).
	add(statement([]string{"s3:GetObject", "s3:GetObjectVersion"}, objects(storage.Input.BucketArn(), "")))
	// List the input bucket's current versions to find objects whose event
	// was lost (the scheduled reconciler; versions, since jobs key on them).
	add(statement([]string{"s3:ListBucket", "s3:ListBucketVersions"}, storage.Input.BucketArn()))
	// Write its own logs, to its own log group.
	add(statement([]string{"logs:CreateLogStream", "logs:PutLogEvents"}, o.LogGroup.LogGroupArn()))
}

// filterNotification sets the optional prefix/suffix key filters of the
// input bucket's notification from the parameters. A rule with an empty
// filter value is never sent: a filter rule exists only when its parameter
// is set, and with neither set the notification has no Filter at all.
func filterNotification(stack awscdk.Stack, input awss3.Bucket, p *Parameters) {
	rule := func(name string, v awscdk.CfnParameter) map[string]interface{} {
		return map[string]interface{}{"Name": name, "Value": v.ValueAsString()}
	}
	filter := func(rules ...map[string]interface{}) map[string]interface{} {
		return map[string]interface{}{"Key": map[string]interface{}{"FilterRules": rules}}
	}
	value := awscdk.Fn_ConditionIf(p.HasBoth.LogicalId(),
		filter(rule("prefix", p.FilterPrefix), rule("suffix", p.FilterSuffix)),
		awscdk.Fn_ConditionIf(p.HasPrefix.LogicalId(),
			filter(rule("prefix", p.FilterPrefix)),
			awscdk.Fn_ConditionIf(p.HasSuffix.LogicalId(),
				filter(rule("suffix", p.FilterSuffix)),
				awscdk.Aws_NO_VALUE())))
	res := input.Node().FindChild(jsii.String("Notifications")).Node().DefaultChild().(awscdk.CfnResource)
	res.AddPropertyOverride(jsii.String("NotificationConfiguration.LambdaFunctionConfigurations.0.Filter"), value)
}
