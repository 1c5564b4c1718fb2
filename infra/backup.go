package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdlm"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/jsii-runtime-go"
)

// The defaults of the tag that puts a volume under the snapshot policy
// (parameters BackupTagKey and BackupTagValue). DLM snapshots every volume
// so tagged in the account and region, not only Conveyor's.
const (
	BackupTagKey   = "Backup"
	BackupTagValue = "True"
)

// Snapshots is the Data Lifecycle Manager policy and its service role.
type Snapshots struct {
	Policy awsdlm.CfnLifecyclePolicy
	Role   awsiam.Role
}

// newSnapshotPolicy creates the Data Lifecycle Manager policy that
// snapshots every volume tagged Backup=True daily and keeps the last N.
func newSnapshotPolicy(stack awscdk.Stack, params *Parameters) *Snapshots {
	role := awsiam.NewRole(stack, jsii.String("SnapshotRole"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("dlm.amazonaws.com"), nil),
		Description: jsii.String("Data Lifecycle Manager: snapshots of Conveyor's data volume"),
		// AWS's managed policy for DLM's default role: DLM evaluates target
		// tags at run time and calls Create/Delete/Describe snapshot APIs
		// that AWS keeps this policy in step with (AllowedManagedPolicies).
		ManagedPolicies: &[]awsiam.IManagedPolicy{
			awsiam.ManagedPolicy_FromAwsManagedPolicyName(jsii.String("service-role/AWSDataLifecycleManagerServiceRole")),
		},
	})
	policy := awsdlm.NewCfnLifecyclePolicy(stack, jsii.String("SnapshotPolicy"), &awsdlm.CfnLifecyclePolicyProps{
		Description:      jsii.String("Conveyor daily snapshots of volumes carrying its backup tag"),
		State:            jsii.String("ENABLED"),
		ExecutionRoleArn: role.RoleArn(),
		PolicyDetails: &awsdlm.CfnLifecyclePolicy_PolicyDetailsProperty{
			PolicyType:    jsii.String("EBS_SNAPSHOT_MANAGEMENT"),
			ResourceTypes: jsii.Strings("VOLUME"),
			TargetTags:    &[]interface{}{&awscdk.CfnTag{Key: params.BackupTagKey.ValueAsString(), Value: params.BackupTagValue.ValueAsString()}},
			Schedules: &[]interface{}{&awsdlm.CfnLifecyclePolicy_ScheduleProperty{
				Name: jsii.String("daily"),
				CreateRule: &awsdlm.CfnLifecyclePolicy_CreateRuleProperty{
					Interval:     jsii.Number(24),
					IntervalUnit: jsii.String("HOURS"),
					Times:        &[]*string{params.SnapshotTime.ValueAsString()},
				},
				RetainRule: &awsdlm.CfnLifecyclePolicy_RetainRuleProperty{Count: params.SnapshotRetain.ValueAsNumber()},
				CopyTags:   jsii.Bool(true),
				TagsToAdd:  &[]interface{}{&awscdk.CfnTag{Key: jsii.String("conveyor:snapshot"), Value: jsii.String("dlm-daily")}},
			}},
		},
	})
	return &Snapshots{Policy: policy, Role: role}
}
