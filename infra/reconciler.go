package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsssm"
	"github.com/aws/jsii-runtime-go"

	"github.com/conveyorhq/conveyor/internal/lambda"
)

// The reconciler function's schedule and budget.
const (
	// ReconcileEveryMinutes is how often an EventBridge schedule invokes
	// the reconciler: objects whose event was lost get their job, and jobs
	// whose dispatch or worker was lost are sent again.
	ReconcileEveryMinutes = 15
	// ReconcilerTimeoutMinutes is the function's timeout. A pass stops
	// lambda.DefaultReconcileMargin before it and the next pass resumes
	// from its cursor, so a large bucket takes several passes, never a
	// longer one; well under the interval, so passes cannot pile up.
	ReconcilerTimeoutMinutes = 5
)

// Reconciler is the Lambda that reconciles on a schedule: the same
// bootstrap as the orchestrator, in the reconciler role.
type Reconciler struct {
	Function awslambda.Function
	Role     awsiam.Role
	LogGroup awslogs.LogGroup
	// Schedule is the EventBridge rule that invokes Function.
	Schedule awsevents.Rule
}

func newReconciler(stack awscdk.Stack, props StackProps, params *Parameters, cfg *DeployedConfig, storage *Storage, worker *Worker, doc awsssm.CfnDocument, code awslambda.Code) *Reconciler {
	r := &Reconciler{}
	r.LogGroup = awslogs.NewLogGroup(stack, jsii.String("ReconcilerLogs"), &awslogs.LogGroupProps{
		Retention:     awslogs.RetentionDays_ONE_MONTH,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	r.Role = awsiam.NewRole(stack, jsii.String("ReconcilerRole"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
		Description: jsii.String("Conveyor reconciler: list input versions and the job index, repair job records, SSM SendCommand to the worker"),
	})
	addReconcilerPolicy(stack, r, storage, documentArn(stack, doc))

	r.Function = awslambda.NewFunction(stack, jsii.String("Reconciler"), &awslambda.FunctionProps{
		Description:  jsii.String("Conveyor reconciler: every 15 minutes, jobs for objects whose event was lost, lost dispatches sent again"),
		Runtime:      awslambda.Runtime_PROVIDED_AL2023(),
		Architecture: awslambda.Architecture_ARM_64(),
		Handler:      jsii.String("bootstrap"),
		Code:         code,
		Role:         r.Role,
		LogGroup:     r.LogGroup,
		MemorySize:   jsii.Number(256),
		Timeout:      awscdk.Duration_Minutes(jsii.Number(ReconcilerTimeoutMinutes)),
		// One pass at a time: passes never overlap (a tick that finds one
		// running waits in Lambda's queue, then runs).
		ReservedConcurrentExecutions: jsii.Number(1),
		// No retries and no on-failure destination: the next scheduled
		// pass is the retry, and a failed pass is reported by its
		// ReconcileFailed metric, not parked in the orchestrator's DLQ. A
		// tick still queued when the next one is due is dropped.
		RetryAttempts: jsii.Number(0),
		MaxEventAge:   awscdk.Duration_Minutes(jsii.Number(ReconcileEveryMinutes)),
		Environment:   lambdaEnvironment(lambda.RoleReconciler, props, params, cfg, storage, worker, doc),
	})

	r.Schedule = awsevents.NewRule(stack, jsii.String("Reconcile"), &awsevents.RuleProps{
		Description: jsii.String("Invokes the reconciler: input objects and job records"),
		Schedule:    awsevents.Schedule_Rate(awscdk.Duration_Minutes(jsii.Number(ReconcileEveryMinutes))),
		Targets:     &[]awsevents.IRuleTarget{awseventstargets.NewLambdaFunction(r.Function, &awseventstargets.LambdaFunctionProps{RetryAttempts: jsii.Number(0)})},
	})
	return r
}

// addReconcilerPolicy gives the reconciler role exactly what a pass needs.
// It deletes no job record: on AWS the state bucket's lifecycle rules
// expire finished history (storage.go), so the role cannot destroy a
// record, finished or not, even by a bug.
func addReconcilerPolicy(stack awscdk.Stack, r *Reconciler, storage *Storage, docArn *string) {
	add := func(s awsiam.PolicyStatement) { r.Role.AddToPolicy(s) }
	state := storage.State.BucketArn()
	// A pass submits jobs and dispatches them again: what the
	// orchestrator's dispatch needs (document, tagged workers, start,
	// describe).
	addDispatchPolicy(stack, r.Role, docArn)
	// Create, read and update job records (conditional writes), jobs/ only.
	add(statement([]string{"s3:GetObject", "s3:PutObject"}, objects(state, JobRecordPrefix)))
	// The record of an older version whose event was lost is created
	// superseded, a terminal state: it carries the finished tag, and a
	// PutObject with tags is also authorized as PutObjectTagging.
	add(statement([]string{"s3:PutObjectTagging"}, objects(state, JobRecordPrefix)))
	// Keep the job index: add and remove the markers of unfinished
	// (active/) and finished (done/) jobs. Their keys name the job;
	// listing them is all the reading a pass does.
	add(statement([]string{"s3:PutObject", "s3:DeleteObject"}, objects(state, ActiveIndexPrefix), objects(state, DoneIndexPrefix)))
	// Its cursors: read where the last pass stopped, save where this one
	// stops, remove one when a sweep completes.
	add(statement([]string{"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}, objects(state, ReconcilePrefix)))
	// List the index and the cursors. Not limited to prefixes: without
	// ListBucket on the bucket itself, S3 answers a read of a record that is
	// gone (expired, or never written after its marker) with 403 instead of
	// 404, and the pass could not tell a lost record from a refusal.
	add(statement([]string{"s3:ListBucket"}, state))
	// HEAD an input object for its size and version (HeadObject is
	// authorized as GetObject/GetObjectVersion; the code never reads data).
	add(statement([]string{"s3:GetObject", "s3:GetObjectVersion"}, objects(storage.Input.BucketArn(), "")))
	// List the input bucket's versions to find objects whose event was
	// lost (versions, since jobs key on them).
	add(statement([]string{"s3:ListBucket", "s3:ListBucketVersions"}, storage.Input.BucketArn()))
	// Write its own logs (and so its metrics), to its own log group.
	add(statement([]string{"logs:CreateLogStream", "logs:PutLogEvents"}, r.LogGroup.LogGroupArn()))
	// Put job events (CONVEYOR_EVENT_BUS) on the default bus only.
	add(statement([]string{"events:PutEvents"}, eventBusArn(stack)))
}
