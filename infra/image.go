package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// ImageContextKey is the CDK context value (cdk.json) holding the pinned
// worker AMI: the WorkerImageId parameter's default. `make upgrade-ami`
// writes it.
const ImageContextKey = "workerImageId"

// newImageParameter is WorkerImageId: the AMI of every worker, pinned. It
// changes only when an operator moves it (make upgrade-ami, or
// --parameters WorkerImageId=ami-...), never because AWS published a new
// Amazon Linux release: cdk deploy keeps a parameter's previous value.
// Without a pinned default (def ""), a first deploy must name one.
func newImageParameter(stack awscdk.Stack, def string) awscdk.CfnParameter {
	p := &awscdk.CfnParameterProps{
		Type: jsii.String("AWS::EC2::Image::Id"),
		Description: jsii.String("The workers' AMI (Amazon Linux 2023 arm64), pinned: `make -C infra upgrade-ami` moves it to the latest (" +
			WorkerImageParameter + "). Changing it replaces the workers (an instance refresh drains them)"),
	}
	if def != "" {
		p.Default = jsii.String(def)
	}
	return awscdk.NewCfnParameter(stack, jsii.String("WorkerImageId"), p)
}

// pinnedImage is the AMI the WorkerImageId parameter names.
type pinnedImage struct{ id *string }

// GetImage implements awsec2.IMachineImage.
func (i *pinnedImage) GetImage(constructs.Construct) *awsec2.MachineImageConfig {
	return &awsec2.MachineImageConfig{ImageId: i.id, OsType: awsec2.OperatingSystemType_LINUX, UserData: awsec2.UserData_ForLinux(nil)}
}
