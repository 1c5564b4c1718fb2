package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// featureFlags are the CDK feature flags the stack is written against. They
// live here rather than in cdk.json so that `cdk synth`, `go run .` and the
// tests build the very same template.
var featureFlags = map[string]interface{}{
	// S3 server access logs are delivered under a bucket policy for
	// logging.s3.amazonaws.com instead of the legacy ACL grant, so the log
	// bucket can keep Object Ownership "bucket owner enforced".
	"@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": true,
	// The VPC flow-log delivery policy is written by CDK on the log bucket.
	"@aws-cdk/aws-s3:createDefaultLoggingPolicy": true,
	// arn:aws:... literals where the partition is known, never needed here
	// (env-agnostic stack) but kept to match current CDK defaults.
	"@aws-cdk/core:enablePartitionLiterals": true,
	// gp3 is the default EBS type for block devices that do not say.
	"@aws-cdk/aws-ec2:ebsDefaultGp3Volume": true,
	// CDK's built-in CloudFormation validation reports findings as errors
	// (synthesis fails) rather than warnings.
	"@aws-cdk/core:validateAgainstDefaultRules": true,
}

// newApp returns the CDK app with Conveyor's feature flags, CDK's built-in
// CloudFormation validation enabled, and cdk-nag's AWS Solutions checks
// applied to every construct. outdir may be "" (the CLI's CDK_OUTDIR, or a
// temp dir).
func newApp(outdir string) awscdk.App {
	props := &awscdk.AppProps{
		Context: &featureFlags,
		// Validate the synthesized template against the CloudFormation
		// resource schemas (built into aws-cdk-lib, offline).
		BuiltinCloudFormationValidation: jsii.Bool(true),
		AnalyticsReporting:              jsii.Bool(false),
		// Construct stack traces make the cloud assembly large and slow.
		StackTraces: jsii.Bool(false),
	}
	if outdir != "" {
		props.Outdir = jsii.String(outdir)
	}
	app := awscdk.NewApp(props)
	awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}), nil)
	return app
}

// synthOptions are the options every synthesis uses: error annotations
// (cdk-nag findings among them) fail the synthesis.
var synthOptions = &awscdk.StageSynthesisOptions{ValidateOnSynthesis: jsii.Bool(true)}
