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
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, awsOptions(c)...)
	if err != nil {
		return c, fmt.Errorf("--stack %s: load AWS configuration: %w", c.Stack, err)
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
		return c, fmt.Errorf("--stack %s: no such stack in %s (%s); check the name and AWS_REGION", c.Stack, ac.Region, ae.ErrorMessage())
	case err != nil:
		return c, fmt.Errorf("--stack %s: describe the stack in %s: %w", c.Stack, ac.Region, err)
	case len(out.Stacks) == 0:
		return c, fmt.Errorf("--stack %s: no such stack in %s", c.Stack, ac.Region)
	}
	outputs := map[string]string{}
	for _, o := range out.Stacks[0].Outputs {
		outputs[aws.ToString(o.OutputKey)] = aws.ToString(o.OutputValue)
	}
	for _, k := range []string{stackOutputInput, stackOutputOutput, stackOutputState} {
		if outputs[k] == "" {
			return c, fmt.Errorf("--stack %s: the stack has no output %s (status %s): is it a Conveyor stack, and is its deployment complete?", c.Stack, k, out.Stacks[0].StackStatus)
		}
	}
	c.Buckets.Input, c.Buckets.Output, c.Buckets.State = outputs[stackOutputInput], outputs[stackOutputOutput], outputs[stackOutputState]
	c.S3.Region = ac.Region
	if c.S3.Endpoint == "" {
		c.S3.AWS = true
	}
	return c, c.validate()
}
