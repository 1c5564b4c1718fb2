package ssm

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
)

// raiseCapacity brings a worker of the Auto Scaling group up: when the
// group's desired capacity is zero (every worker stopped in the warm pool
// after an idle period) it raises it to one, and the group starts a
// warm-pool instance. It returns the instances on their way into service,
// or the group's name when the group has yet to pick one. The group, not
// the dispatcher, starts its instances: one started behind its back would
// be taken for unhealthy.
func (d *Dispatcher) raiseCapacity(ctx context.Context) ([]string, error) {
	name := d.cfg.AutoScalingGroup
	out, err := d.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{name}}, d.asgOpts...)
	if err != nil {
		return nil, d.explain("autoscaling:DescribeAutoScalingGroups", name, err)
	}
	if len(out.AutoScalingGroups) == 0 {
		return nil, fmt.Errorf("autoscaling:DescribeAutoScalingGroups: no Auto Scaling group named %q: check AutoScalingGroup", name)
	}
	g := out.AutoScalingGroups[0]
	var coming []string
	for _, inst := range g.Instances {
		switch inst.LifecycleState {
		case "Pending", "Pending:Wait", "Pending:Proceed", "InService":
			coming = append(coming, aws.ToString(inst.InstanceId))
		}
	}
	if aws.ToInt32(g.DesiredCapacity) >= 1 {
		if len(coming) == 0 {
			coming = []string{"a new worker of group " + name}
		}
		return coming, nil
	}
	if aws.ToInt32(g.MaxSize) < 1 {
		return nil, fmt.Errorf("the Auto Scaling group %s has a maximum size of 0: raise MaxWorkers to run jobs", name)
	}
	_, err = d.asg.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{
		AutoScalingGroupName: aws.String(name),
		DesiredCapacity:      aws.Int32(1),
		HonorCooldown:        aws.Bool(false),
	}, d.asgOpts...)
	if err != nil {
		return nil, d.explain("autoscaling:SetDesiredCapacity", name, err)
	}
	return []string{"a worker of group " + name + " (desired capacity 0 -> 1)"}, nil
}
