package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	"github.com/aws/smithy-go"
)

// The outputs of the AWS stack (infra/stack.go) that name its buckets.
const (
	stackOutputInput  = "InputBucketName"
	stackOutputOutput = "OutputBucketName"
	stackOutputState  = "StateBucketName"
)

// useStack points c at the stack's buckets on Amazon S3: it reads the
// stack's outputs with CloudFormation DescribeStacks (credentials from the
// usual AWS chain, or s3.access_key_id; the region from the chain, else
// s3.region), and keeps s3.endpoint when set (tests, S3-compatible
// copies). getenv supplies AWS_ENDPOINT_URL_CLOUDFORMATION.
func useStack(ctx context.Context, c FileConfig, getenv func(string) string) (FileConfig, error) {
	st, err := describeStack(ctx, c, getenv)
	if err != nil {
		return c, err
	}
	outputs := st.outputs
	for _, k := range []string{stackOutputInput, stackOutputOutput, stackOutputState} {
		if outputs[k] == "" {
			return c, fmt.Errorf("--stack %s: the stack has no output %s (status %s): is it a Conveyor stack, and is its deployment complete?", c.Stack, k, st.status)
		}
	}
	c.Buckets.Input, c.Buckets.Output, c.Buckets.State = outputs[stackOutputInput], outputs[stackOutputOutput], outputs[stackOutputState]
	c.S3.Region = st.aws.Region
	if c.S3.Endpoint == "" {
		c.S3.AWS = true
	}
	return c, c.validate()
}

// stackInfo is what DescribeStacks says of a stack, and the AWS
// configuration it was read with.
type stackInfo struct {
	aws                 aws.Config
	status              string
	outputs, parameters map[string]string
}

// describeStack reads the stack c.Stack names (see useStack).
func describeStack(ctx context.Context, c FileConfig, getenv func(string) string) (stackInfo, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, awsOptions(c)...)
	if err != nil {
		return stackInfo{}, fmt.Errorf("--stack %s: load AWS configuration: %w", c.Stack, err)
	}
	if ac.Region == "" {
		ac.Region = c.S3.Region
	}
	cf := cloudformation.NewFromConfig(ac, func(o *cloudformation.Options) {
		if ep := getenv("AWS_ENDPOINT_URL_CLOUDFORMATION"); ep != "" {
			o.BaseEndpoint = aws.String(ep)
		}
	})
	out, err := cf.DescribeStacks(ctx, &cloudformation.DescribeStacksInput{StackName: aws.String(c.Stack)})
	var ae smithy.APIError
	switch {
	case errors.As(err, &ae) && ae.ErrorCode() == "ValidationError":
		return stackInfo{}, fmt.Errorf("--stack %s: no such stack in %s (%s); check the name and AWS_REGION", c.Stack, ac.Region, ae.ErrorMessage())
	case err != nil:
		return stackInfo{}, fmt.Errorf("--stack %s: describe the stack in %s: %w", c.Stack, ac.Region, err)
	case len(out.Stacks) == 0:
		return stackInfo{}, fmt.Errorf("--stack %s: no such stack in %s", c.Stack, ac.Region)
	}
	st := stackInfo{aws: ac, status: string(out.Stacks[0].StackStatus), outputs: map[string]string{}, parameters: map[string]string{}}
	for _, o := range out.Stacks[0].Outputs {
		st.outputs[aws.ToString(o.OutputKey)] = aws.ToString(o.OutputValue)
	}
	for _, p := range out.Stacks[0].Parameters {
		st.parameters[aws.ToString(p.ParameterKey)] = aws.ToString(p.ParameterValue)
	}
	return st, nil
}
