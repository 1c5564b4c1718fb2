package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/jsii-runtime-go"
)

// UnscopableActions are the only actions allowed on Resource "*": their IAM
// authorization has no resource type (Service Authorization Reference), so
// no ARN could narrow them. TestNoWildcards fails on any other action on "*".
var UnscopableActions = map[string]string{
	"ssm:DescribeInstanceInformation":       "the Lambda checks the worker is online; no resource type",
	"ec2:DescribeInstances":                 "the Lambda reads the worker's state; Describe* has no resource type",
	"ssm:ListCommandInvocations":            "the Lambda counts the commands in flight per worker (dispatch by load); no resource type",
	"autoscaling:DescribeAutoScalingGroups": "the Lambda and the workers read the group's desired capacity; Describe* has no resource type",
	"ssmmessages:CreateControlChannel":      "SSM agent channel to the service; no resource type",
	"ssmmessages:CreateDataChannel":         "SSM agent channel to the service; no resource type",
	"ssmmessages:OpenControlChannel":        "SSM agent channel to the service; no resource type",
	"ssmmessages:OpenDataChannel":           "SSM agent channel to the service; no resource type",
	"ec2messages:AcknowledgeMessage":        "SSM agent Run Command delivery; no resource type",
	"ec2messages:DeleteMessage":             "SSM agent Run Command delivery; no resource type",
	"ec2messages:FailMessage":               "SSM agent Run Command delivery; no resource type",
	"ec2messages:GetEndpoint":               "SSM agent Run Command delivery; no resource type",
	"ec2messages:GetMessages":               "SSM agent Run Command delivery; no resource type",
	"ec2messages:SendReply":                 "SSM agent Run Command delivery; no resource type",
}

// AllowedManagedPolicies are the AWS managed policies a role may carry, each
// with why an inline policy is not used instead.
var AllowedManagedPolicies = map[string]string{
	"service-role/AWSDataLifecycleManagerServiceRole": "DLM's documented default role policy; AWS keeps it in step with what DLM calls",
	"service-role/AWSLambdaBasicExecutionRole":        "CDK's S3 notifications custom resource (BucketNotificationsHandler) role, defined by CDK",
}

// statement builds an Allow statement; every caller says why in a comment.
func statement(actions []string, resources ...*string) awsiam.PolicyStatement {
	return awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Effect:    awsiam.Effect_ALLOW,
		Actions:   jsii.Strings(actions...),
		Resources: &resources,
	})
}

// conditional is statement with IAM conditions.
func conditional(actions []string, conditions map[string]interface{}, resources ...*string) awsiam.PolicyStatement {
	s := statement(actions, resources...)
	for op, c := range conditions {
		s.AddCondition(jsii.String(op), c)
	}
	return s
}

// workerInstancesArn is every EC2 instance in the stack's account and
// region; statements on it carry the worker tag condition.
func workerInstancesArn(stack awscdk.Stack) *string {
	return stack.FormatArn(&awscdk.ArnComponents{Service: jsii.String("ec2"), Resource: jsii.String("instance"), ResourceName: jsii.String("*")})
}

// objects is the ARN of the objects under prefix in bucket.
func objects(bucketArn *string, prefix string) *string {
	return awscdk.Fn_Join(jsii.String(""), &[]*string{bucketArn, jsii.String("/" + prefix + "*")})
}

// EventBus is the EventBridge bus the functions and the workers put job
// events on (CONVEYOR_EVENT_BUS, events.bus): the account's default bus,
// where AWS services put theirs and users' rules match them.
const EventBus = "default"

// eventBusArn is the ARN of the default bus in the stack's account and
// region: PutEvents is authorized against the bus.
func eventBusArn(stack awscdk.Stack) *string {
	return stack.FormatArn(&awscdk.ArnComponents{Service: jsii.String("events"), Resource: jsii.String("event-bus"), ResourceName: jsii.String(EventBus)})
}
