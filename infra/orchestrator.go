package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambdadestinations"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3notifications"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsssm"
	"github.com/aws/jsii-runtime-go"

	"github.com/conveyorhq/conveyor/internal/lambda"
)

// Asynchronous invocation settings of the orchestrator. Its work is
// idempotent (conditional job-record writes) and the reconciler catches
// anything lost, so a few retries within hours are enough.
const (
	OrchestratorRetryAttempts = 2
	OrchestratorMaxEventAge   = 6 // hours
)

// Orchestrator is the Lambda that turns object-created events into jobs.
type Orchestrator struct {
	Function awslambda.Function
	Role     awsiam.Role
	LogGroup awslogs.LogGroup
	DLQ      awssqs.Queue
}

func newOrchestrator(stack awscdk.Stack, props StackProps, params *Parameters, cfg *DeployedConfig, storage *Storage, worker *Worker, doc awsssm.CfnDocument, code awslambda.Code) *Orchestrator {
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
	addOrchestratorPolicy(stack, o, storage, documentArn(stack, doc))

	o.Function = awslambda.NewFunction(stack, jsii.String("Orchestrator"), &awslambda.FunctionProps{
		Description:                  jsii.String("Conveyor orchestrator: S3 ObjectCreated -> job record -> SSM SendCommand"),
		Runtime:                      awslambda.Runtime_PROVIDED_AL2023(),
		Architecture:                 awslambda.Architecture_ARM_64(),
		Handler:                      jsii.String("bootstrap"),
		Code:                         code,
		Role:                         o.Role,
		LogGroup:                     o.LogGroup,
		MemorySize:                   jsii.Number(256),
		Timeout:                      awscdk.Duration_Seconds(jsii.Number(30)),
		ReservedConcurrentExecutions: jsii.Number(props.ReservedConcurrency),
		RetryAttempts:                jsii.Number(OrchestratorRetryAttempts),
		MaxEventAge:                  awscdk.Duration_Hours(jsii.Number(OrchestratorMaxEventAge)),
		// Events still failing after the retries land in the DLQ (the
		// destination's send permission is added to the role by CDK).
		OnFailure:   awslambdadestinations.NewSqsDestination(o.DLQ),
		Environment: lambdaEnvironment(lambda.RoleOrchestrator, props, params, cfg, storage, worker, doc),
	})

	// Uploads the configuration's filters refuse never invoke the function
	// (the orchestrator applies the same filters again).
	dest := awss3notifications.NewLambdaDestination(o.Function)
	for _, f := range notificationFilters(cfg.AWS.Prefixes, cfg.AWS.Suffixes) {
		storage.Input.AddEventNotification(awss3.EventType_OBJECT_CREATED, dest, f...)
	}
	return o
}

// addOrchestratorPolicy gives the orchestrator role exactly what it needs.
func addOrchestratorPolicy(stack awscdk.Stack, o *Orchestrator, storage *Storage, docArn *string) {
	add := func(s awsiam.PolicyStatement) { o.Role.AddToPolicy(s) }
	addDispatchPolicy(stack, o.Role, docArn)
	// Create, read and update job records (conditional writes), jobs/ only.
	// It lists nothing: reading a record it failed to create (it exists)
	// and updating one it created need no ListBucket; the reconciler
	// function does the listing.
	add(statement([]string{"s3:GetObject", "s3:PutObject"}, objects(storage.State.BucketArn(), JobRecordPrefix)))
	// The job index: a new job's active marker is written before its
	// record; an event repeated for a finished job takes back the marker
	// it wrote (done marker put, active marker deleted).
	add(statement([]string{"s3:PutObject", "s3:DeleteObject"}, objects(storage.State.BucketArn(), ActiveIndexPrefix), objects(storage.State.BucketArn(), DoneIndexPrefix)))
	// HEAD the input object for its size and version (HeadObject is
	// authorized as GetObject/GetObjectVersion; the code never reads data).
	add(statement([]string{"s3:GetObject", "s3:GetObjectVersion"}, objects(storage.Input.BucketArn(), "")))
	// Write its own logs, to its own log group.
	add(statement([]string{"logs:CreateLogStream", "logs:PutLogEvents"}, o.LogGroup.LogGroupArn()))
	// Put job events (CONVEYOR_EVENT_BUS) on the default bus only.
	add(statement([]string{"events:PutEvents"}, eventBusArn(stack)))
}

// documentArn is the ARN of Conveyor's SSM document.
func documentArn(stack awscdk.Stack, doc awsssm.CfnDocument) *string {
	return stack.FormatArn(&awscdk.ArnComponents{Service: jsii.String("ssm"), Resource: jsii.String("document"), ResourceName: doc.Ref()})
}

// addDispatchPolicy gives role what dispatching a job through SSM needs;
// both functions dispatch.
func addDispatchPolicy(stack awscdk.Stack, role awsiam.Role, docArn *string) {
	add := func(s awsiam.PolicyStatement) { role.AddToPolicy(s) }
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
}

// notificationFilters are the key filters of the input bucket's
// notifications: one notification per prefix and suffix pair (S3 takes one
// prefix rule and one suffix rule per notification), or one without a
// filter when the configuration has none. cli.LoadConfigForAWS has refused
// overlapping prefixes or suffixes, which S3 would refuse at deploy time.
func notificationFilters(prefixes, suffixes []string) [][]*awss3.NotificationKeyFilter {
	if len(prefixes) == 0 {
		prefixes = []string{""}
	}
	if len(suffixes) == 0 {
		suffixes = []string{""}
	}
	var out [][]*awss3.NotificationKeyFilter
	for _, p := range prefixes {
		for _, s := range suffixes {
			f := &awss3.NotificationKeyFilter{}
			if p != "" {
				f.Prefix = jsii.String(p)
			}
			if s != "" {
				f.Suffix = jsii.String(s)
			}
			if f.Prefix == nil && f.Suffix == nil {
				out = append(out, nil)
				continue
			}
			out = append(out, []*awss3.NotificationKeyFilter{f})
		}
	}
	return out
}
