package main

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// addNagSuppressions records, on the construct concerned, why a cdk-nag
// AwsSolutions finding does not apply. Wildcard findings (IAM5) are
// suppressed for the exact resources listed, never for a whole rule.
func addNagSuppressions(stack awscdk.Stack, c *Conveyor) {
	suppress := func(scope constructs.IConstruct, id, reason string, appliesTo ...string) {
		s := &cdknag.NagPackSuppression{Id: jsii.String(id), Reason: jsii.String(reason)}
		if len(appliesTo) > 0 {
			a := make([]interface{}, len(appliesTo))
			for i, v := range appliesTo {
				a[i] = v
			}
			s.AppliesTo = &a
		}
		cdknag.NagSuppressions_AddResourceSuppressions(scope, &[]*cdknag.NagPackSuppression{s}, jsii.Bool(true))
	}
	arn := func(scope constructs.IConstruct) string {
		return fmt.Sprintf("<%s.Arn>", *stack.GetLogicalId(scope.Node().DefaultChild().(awscdk.CfnElement)))
	}
	instances := "Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*"
	s := c.Storage

	suppress(s.Logs, "AwsSolutions-S1",
		"This is the access-log bucket: logging its own accesses into itself would loop.")
	suppress(c.Orch.DLQ, "AwsSolutions-SQS3",
		"This queue is the dead-letter destination (Lambda on-failure destination) of the orchestrator's asynchronous invocations; cdk-nag only recognises redrive-policy DLQs.")
	suppress(c.Worker.Instance, "AwsSolutions-EC28",
		"One worker; basic (5-minute) monitoring is enough and detailed monitoring would add ~$2/month per instance.")
	suppress(c.Worker.Instance, "AwsSolutions-EC29",
		"The instance is disposable by design: its state is on the separate data volume (RETAIN, snapshotted by DLM); termination protection would make `cdk destroy` and instance replacement fail.")

	suppress(c.Worker.Role, "AwsSolutions-IAM5",
		"Object-level wildcards under one bucket or key prefix: the worker reads any input object, writes any output key, and writes its job records (jobs/), their index markers (active/, done/) and logs (logs/); "+
			"ssm:UpdateInstanceInformation on the account's instances because the instance ID exists only after the role; "+
			"'*' only for ssmmessages/ec2messages actions, which have no resource type (see UnscopableActions).",
		"Resource::"+arn(s.Input)+"/*",
		"Resource::"+arn(s.Output)+"/*",
		"Resource::"+arn(s.State)+"/"+JobRecordPrefix+"*",
		"Resource::"+arn(s.State)+"/"+ActiveIndexPrefix+"*",
		"Resource::"+arn(s.State)+"/"+DoneIndexPrefix+"*",
		"Resource::"+arn(s.State)+"/"+JobLogPrefix+"*",
		instances,
		"Resource::*")
	suppress(c.Orch.Role, "AwsSolutions-IAM5",
		"Object-level wildcards: job records under jobs/ and their index markers (active/, done/) in the state bucket, HEAD of any input object; "+
			"instance/* is narrowed by the condition conveyor:role=worker (ssm:resourceTag / aws:ResourceTag); "+
			"'*' only for ssm:DescribeInstanceInformation and ec2:DescribeInstances, which have no resource type (see UnscopableActions).",
		"Resource::"+arn(s.Input)+"/*",
		"Resource::"+arn(s.State)+"/"+JobRecordPrefix+"*",
		"Resource::"+arn(s.State)+"/"+ActiveIndexPrefix+"*",
		"Resource::"+arn(s.State)+"/"+DoneIndexPrefix+"*",
		instances,
		"Resource::*")
	suppress(c.Recon.Role, "AwsSolutions-IAM5",
		"Object-level wildcards under one key prefix each: job records (jobs/), the job index (active/, done/) and the reconciler's cursors (reconcile/) in the state bucket, HEAD of any input object; "+
			"instance/* is narrowed by the condition conveyor:role=worker (ssm:resourceTag / aws:ResourceTag); "+
			"'*' only for ssm:DescribeInstanceInformation and ec2:DescribeInstances, which have no resource type (see UnscopableActions).",
		"Resource::"+arn(s.Input)+"/*",
		"Resource::"+arn(s.State)+"/"+JobRecordPrefix+"*",
		"Resource::"+arn(s.State)+"/"+ActiveIndexPrefix+"*",
		"Resource::"+arn(s.State)+"/"+DoneIndexPrefix+"*",
		"Resource::"+arn(s.State)+"/"+ReconcilePrefix+"*",
		instances,
		"Resource::*")
	suppress(c.Snapshots.Role, "AwsSolutions-IAM4",
		"AWSDataLifecycleManagerServiceRole is the policy of DLM's documented default role; AWS maintains it with the snapshot APIs DLM calls.",
		"Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole")

	// CDK's S3 notifications custom resource: one Lambda per stack, written
	// and maintained by CDK, that calls PutBucketNotification (CDK scopes that
	// statement to the input bucket) once per deployment.
	handler := stack.Node().TryFindChild(jsii.String("BucketNotificationsHandler050a0587b7544547bf325f094a3db834"))
	if handler != nil {
		suppress(handler, "AwsSolutions-IAM4",
			"CDK's BucketNotificationsHandler custom resource uses AWSLambdaBasicExecutionRole for its own CloudWatch logs; its role is created by CDK, not by this stack's code.",
			"Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole")
	}
}
