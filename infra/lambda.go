package main

import (
	"strconv"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3assets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsssm"
	"github.com/aws/jsii-runtime-go"

	"github.com/conveyorhq/conveyor/internal/lambda"
)

// lambdaCode is the one code asset of both functions: the `bootstrap`
// directory. build-lambda also leaves bootstrap.zip beside bootstrap; the
// asset is the directory, zipped by CDK, so the zip is left out.
func lambdaCode(props StackProps) awslambda.AssetCode {
	return awslambda.Code_FromAsset(jsii.String(props.LambdaAssetDir), &awss3assets.AssetOptions{
		Exclude: jsii.Strings("*.zip"),
	})
}

// lambdaEnvironment is the environment of both functions: the same
// configuration, and the role that picks the bootstrap's handler.
func lambdaEnvironment(role lambda.Role, props StackProps, params *Parameters, cfg *DeployedConfig, storage *Storage, worker *Worker, doc awsssm.CfnDocument) *map[string]*string {
	env := map[string]*string{
		lambda.EnvRole:         jsii.String(string(role)),
		lambda.EnvInputBucket:  storage.Input.BucketName(),
		lambda.EnvOutputBucket: storage.Output.BucketName(),
		lambda.EnvStateBucket:  storage.State.BucketName(),
		lambda.EnvSSMDocument:  doc.Ref(),
		// Workers are chosen by tag among those online in SSM, so more
		// can be added behind the same orchestrator.
		lambda.EnvWorkerTagKey:   jsii.String(WorkerTagKey),
		lambda.EnvWorkerTagValue: jsii.String(WorkerTagValue),
		lambda.EnvSSMLogGroup:    worker.CommandLogs.LogGroupName(),
		// The filters of the deployed conveyor.yaml (also the input
		// bucket's notification filters); empty accepts every key.
		lambda.EnvFilterPrefixes:   jsii.String(strings.Join(cfg.AWS.Prefixes, ",")),
		lambda.EnvFilterSuffixes:   jsii.String(strings.Join(cfg.AWS.Suffixes, ",")),
		lambda.EnvExecutionTimeout: jsii.String(props.ExecutionTimeout.String()), // a Go duration, as the Lambda reads it
		// Versioning is on: jobs key on version IDs, and the reconciler
		// lists versions.
		lambda.EnvInputVersioned: jsii.String("true"),
		// The lifecycle rule's days: a sweep never takes an input older
		// than the history kept for one whose event was lost.
		lambda.EnvHistoryDays: params.HistoryRetentionDays.ValueAsString(),
		// Job state changes (created, superseded, dead undelivered) go
		// to the default bus, at best effort.
		lambda.EnvEventBus: jsii.String(EventBus),
	}
	// retry.max_attempts of the deployed conveyor.yaml, when it sets it:
	// new job records carry it.
	if cfg.AWS.MaxAttempts != 0 {
		env[lambda.EnvMaxAttempts] = jsii.String(strconv.Itoa(cfg.AWS.MaxAttempts))
	}
	return &env
}
