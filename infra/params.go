package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
)

// DefaultHistoryRetentionDays is the HistoryRetentionDays parameter's default.
const DefaultHistoryRetentionDays = 30

// Parameters are the stack's CloudFormation parameters: what an operator may
// change with `cdk deploy --parameters Name=value` without touching code.
type Parameters struct {
	InstanceType   awscdk.CfnParameter
	SnapshotTime   awscdk.CfnParameter
	SnapshotRetain awscdk.CfnParameter
	// HistoryRetentionDays is how long finished job records and done/
	// markers stay in the state bucket (lifecycle expiration).
	HistoryRetentionDays awscdk.CfnParameter
	// BackupTagKey=BackupTagValue is the tag the DLM policy snapshots:
	// the workers' volumes carry it, and so does any volume of the account
	// and region tagged so, which is snapshotted too.
	BackupTagKey, BackupTagValue awscdk.CfnParameter
	// WorkerImage is the workers' pinned AMI (image.go).
	WorkerImage awscdk.CfnParameter
}

func newParameters(stack awscdk.Stack, props StackProps) *Parameters {
	param := func(id string, p *awscdk.CfnParameterProps) awscdk.CfnParameter {
		return awscdk.NewCfnParameter(stack, jsii.String(id), p)
	}
	p := &Parameters{
		InstanceType: param("InstanceType", &awscdk.CfnParameterProps{
			Type:        jsii.String("String"),
			Default:     jsii.String("t4g.small"),
			Description: jsii.String("Worker instance type; must be Graviton (arm64). Changing it stops and starts the worker."),
			// Graviton families carry a "g" after the generation digit
			// (t4g, m7g, c7gn, r8g); the AMI is arm64.
			AllowedPattern:        jsii.String(`^[a-z]+[0-9]+g[a-z]*\.[a-z0-9]+$`),
			ConstraintDescription: jsii.String("an arm64 (Graviton) instance type such as t4g.small or m7g.large"),
		}),
		SnapshotTime: param("SnapshotTime", &awscdk.CfnParameterProps{
			Type:                  jsii.String("String"),
			Default:               jsii.String("03:00"),
			Description:           jsii.String("Daily data-volume snapshot time, hh:mm UTC"),
			AllowedPattern:        jsii.String(`^([01][0-9]|2[0-3]):[0-5][0-9]$`),
			ConstraintDescription: jsii.String("a UTC time of day as hh:mm, e.g. 03:00"),
		}),
		SnapshotRetain: param("SnapshotRetain", &awscdk.CfnParameterProps{
			Type:        jsii.String("Number"),
			Default:     jsii.Number(7),
			Description: jsii.String("How many daily snapshots of the data volume to keep"),
			MinValue:    jsii.Number(1),
			MaxValue:    jsii.Number(1000),
		}),
		HistoryRetentionDays: param("HistoryRetentionDays", &awscdk.CfnParameterProps{
			Type:        jsii.String("Number"),
			Default:     jsii.Number(DefaultHistoryRetentionDays),
			Description: jsii.String("Days a finished job's record (jobs/, tagged conveyor-finished=true) and its done/ marker are kept; unfinished jobs never expire"),
			MinValue:    jsii.Number(1),
			MaxValue:    jsii.Number(36500),
		}),
	}
	p.BackupTagKey = param("BackupTagKey", &awscdk.CfnParameterProps{
		Type:        jsii.String("String"),
		Default:     jsii.String(BackupTagKey),
		Description: jsii.String("Tag key of the volumes the daily DLM snapshots take: the workers' volumes carry it. Any volume in this account and region with this tag and value is snapshotted too"),
		// EC2 tag keys: 1-127 characters, not starting with aws:.
		AllowedPattern:        jsii.String(`^(?!aws:).{1,127}$`),
		ConstraintDescription: jsii.String("a tag key of 1 to 127 characters, not starting with aws:"),
	})
	p.BackupTagValue = param("BackupTagValue", &awscdk.CfnParameterProps{
		Type:                  jsii.String("String"),
		Default:               jsii.String(BackupTagValue),
		Description:           jsii.String("Tag value of the volumes the daily DLM snapshots take (with BackupTagKey)"),
		AllowedPattern:        jsii.String(`^.{0,255}$`),
		ConstraintDescription: jsii.String("a tag value of up to 255 characters"),
	})
	p.WorkerImage = newImageParameter(stack, props.WorkerImageID)
	return p
}
