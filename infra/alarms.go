package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatchactions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/aws-cdk-go/awscdk/v2/interfaces/interfacesawscloudwatch"
	"github.com/aws/jsii-runtime-go"

	"github.com/conveyorhq/conveyor/internal/jobmetrics"
	"github.com/conveyorhq/conveyor/internal/lambda"
)

// Alarm settings.
const (
	// DefaultOldestUnfinishedMinutes is the OldestUnfinishedMinutes
	// parameter's default: a job unfinished for two hours is stuck (a job
	// runs for at most the SSM execution timeout, an hour, per attempt).
	DefaultOldestUnfinishedMinutes = 120
	// NoWorkerPeriods is how many reconcile intervals (15 minutes each) a
	// backlog may wait with no worker in service before it alarms: a
	// worker from the warm pool is in service within minutes, a new one
	// within its first-boot setup.
	NoWorkerPeriods = 2
)

// Alarms are the operator's alarms, their SNS topic and a dashboard of
// the same metrics.
type Alarms struct {
	AlarmEmail awscdk.CfnParameter
	// OldestUnfinishedMinutes is the age of the oldest unfinished job
	// above which it alarms.
	OldestUnfinishedMinutes awscdk.CfnParameter
	HasEmail                awscdk.CfnCondition
	Topic                   awssns.Topic
	// Key encrypts the topic: a customer managed key, since CloudWatch
	// cannot publish to a topic encrypted with the AWS managed key.
	Key          awskms.Key
	Subscription awssns.CfnSubscription

	DLQDepth, JobsDead, OldestUnfinished, OrchestratorErrors, ReconcileFailed, DispatchFailed, NoWorker awscloudwatch.Alarm
	Dashboard                                                                                           awscloudwatch.Dashboard
}

// newAlarms defines the alarms, all to one topic, and the dashboard.
func newAlarms(stack awscdk.Stack, storage *Storage, orch *Orchestrator, recon *Reconciler, f *Fleet) *Alarms {
	a := &Alarms{}
	a.AlarmEmail = awscdk.NewCfnParameter(stack, jsii.String("AlarmEmail"), &awscdk.CfnParameterProps{
		Type:                  jsii.String("String"),
		Default:               jsii.String(""),
		Description:           jsii.String("E-mail address subscribed to the alarms' SNS topic (confirm the subscription from the mail AWS sends); empty for none"),
		AllowedPattern:        jsii.String(`^$|^[^@\s]+@[^@\s]+\.[^@\s]+$`),
		ConstraintDescription: jsii.String("an e-mail address, or empty"),
	})
	a.OldestUnfinishedMinutes = awscdk.NewCfnParameter(stack, jsii.String("OldestUnfinishedMinutes"), &awscdk.CfnParameterProps{
		Type:        jsii.String("Number"),
		Default:     jsii.Number(DefaultOldestUnfinishedMinutes),
		Description: jsii.String("Alarm when the oldest unfinished job (queued, running or retrying) is older than this many minutes"),
		MinValue:    jsii.Number(15),
		MaxValue:    jsii.Number(10080),
	})
	a.HasEmail = awscdk.NewCfnCondition(stack, jsii.String("HasAlarmEmail"), &awscdk.CfnConditionProps{
		Expression: awscdk.Fn_ConditionNot(awscdk.Fn_ConditionEquals(a.AlarmEmail.ValueAsString(), jsii.String(""))),
	})

	a.Key = newAlarmKey(stack)
	a.Topic = awssns.NewTopic(stack, jsii.String("AlarmTopic"), &awssns.TopicProps{
		DisplayName: jsii.String("Conveyor alarms"),
		MasterKey:   a.Key,
		EnforceSSL:  jsii.Bool(true),
	})
	// CloudWatch publishes the alarms of this account only.
	a.Topic.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Effect:     awsiam.Effect_ALLOW,
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("cloudwatch.amazonaws.com"), nil)},
		Actions:    jsii.Strings("sns:Publish"),
		Resources:  &[]*string{a.Topic.TopicArn()},
		Conditions: &map[string]interface{}{"StringEquals": map[string]interface{}{"aws:SourceAccount": stack.Account()}},
	}))
	a.Subscription = awssns.NewCfnSubscription(stack, jsii.String("AlarmEmailSubscription"), &awssns.CfnSubscriptionProps{
		TopicArn: a.Topic.TopicArn(),
		Protocol: jsii.String("email"),
		Endpoint: a.AlarmEmail.ValueAsString(),
	})
	a.Subscription.CfnOptions().SetCondition(a.HasEmail)

	m := newAlarmMetrics(storage, orch, recon, f)
	action := awscloudwatchactions.NewSnsAction(a.Topic)
	alarm := func(id, desc string, metric awscloudwatch.IMetric, threshold *float64, periods float64, op awscloudwatch.ComparisonOperator) awscloudwatch.Alarm {
		al := awscloudwatch.NewAlarm(stack, jsii.String(id), &awscloudwatch.AlarmProps{
			AlarmDescription:   jsii.String("Conveyor: " + desc),
			Metric:             metric,
			Threshold:          threshold,
			EvaluationPeriods:  jsii.Number(periods),
			DatapointsToAlarm:  jsii.Number(periods),
			ComparisonOperator: op,
			// No data is no trouble: no job, no failure, no dead letter.
			TreatMissingData: awscloudwatch.TreatMissingData_NOT_BREACHING,
		})
		al.AddAlarmAction(action)
		al.AddOkAction(action)
		return al
	}
	atLeastOne := awscloudwatch.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD
	a.DLQDepth = alarm("DeadLetterAlarm", "S3 events the orchestrator failed on after its retries are in its dead-letter queue (the reconciler still creates their jobs; read the messages for why)",
		m.dlqDepth, jsii.Number(1), 1, atLeastOne)
	a.JobsDead = alarm("JobsDeadAlarm", "a job ended dead (attempts used up, permanent error, or never delivered); `conveyor --stack NAME jobs` lists it, `retry` re-queues it",
		m.jobsDead, jsii.Number(1), 1, atLeastOne)
	a.OldestUnfinished = alarm("OldestUnfinishedAlarm", "the oldest unfinished job is older than OldestUnfinishedMinutes",
		m.oldestMinutes, a.OldestUnfinishedMinutes.ValueAsNumber(), 1, awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD)
	a.OrchestratorErrors = alarm("OrchestratorErrorsAlarm", "the orchestrator function failed an invocation (it is retried; see its log group)",
		m.orchErrors, jsii.Number(1), 1, atLeastOne)
	a.ReconcileFailed = alarm("ReconcileFailedAlarm", "a scheduled reconcile pass failed (the next pass resumes; see the reconciler's log group)",
		m.reconcileFailed, jsii.Number(1), 1, atLeastOne)
	// A dispatch that fails once is sent again by the next pass: alarm
	// when failures go on for two intervals.
	a.DispatchFailed = alarm("DispatchFailedAlarm", "dispatches to the workers failed in two reconcile intervals in a row (SSM, the workers' group, or the role)",
		m.dispatchFailed, jsii.Number(1), 2, atLeastOne)
	a.NoWorker = alarm("NoWorkerAlarm", "unfinished jobs wait while no worker is in service (MaxWorkers 0, a launch or first boot failing, no capacity)",
		m.noWorker, jsii.Number(1), NoWorkerPeriods, atLeastOne)

	a.Dashboard = newDashboard(stack, a, m)
	awscdk.NewCfnOutput(stack, jsii.String("AlarmTopicArn"), &awscdk.CfnOutputProps{
		Description: jsii.String("SNS topic of Conveyor's alarms (AlarmEmail subscribes an address)"),
		Value:       a.Topic.TopicArn(),
	})
	awscdk.NewCfnOutput(stack, jsii.String("DashboardName"), &awscdk.CfnOutputProps{
		Description: jsii.String("CloudWatch dashboard of the jobs, the functions and the workers"),
		Value:       a.Dashboard.DashboardName(),
	})
	return a
}

// newAlarmKey is the topic's KMS key. Its policy lists its actions (no
// kms:*): the account administers and uses it, and CloudWatch may encrypt
// the alarm notifications it publishes.
func newAlarmKey(stack awscdk.Stack) awskms.Key {
	doc := awsiam.NewPolicyDocument(&awsiam.PolicyDocumentProps{
		Statements: &[]awsiam.PolicyStatement{
			awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid:        jsii.String("AccountAdministersAndUses"),
				Effect:     awsiam.Effect_ALLOW,
				Principals: &[]awsiam.IPrincipal{awsiam.NewAccountRootPrincipal()},
				Actions: jsii.Strings(
					"kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy", "kms:GetKeyRotationStatus",
					"kms:EnableKeyRotation", "kms:DisableKeyRotation", "kms:EnableKey", "kms:DisableKey",
					"kms:ListResourceTags", "kms:TagResource", "kms:UntagResource", "kms:UpdateKeyDescription",
					"kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion", "kms:ListGrants", "kms:CreateGrant", "kms:RevokeGrant",
					"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:ReEncryptTo"),
				// In a key policy "*" is this key.
				Resources: jsii.Strings("*"),
			}),
			awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid:        jsii.String("CloudWatchPublishesAlarms"),
				Effect:     awsiam.Effect_ALLOW,
				Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("cloudwatch.amazonaws.com"), nil)},
				Actions:    jsii.Strings("kms:Decrypt", "kms:GenerateDataKey"),
				Resources:  jsii.Strings("*"),
				Conditions: &map[string]interface{}{"StringEquals": map[string]interface{}{"aws:SourceAccount": stack.Account()}},
			}),
		},
	})
	return awskms.NewKey(stack, jsii.String("AlarmTopicKey"), &awskms.KeyProps{
		Description:       jsii.String("Conveyor: encrypts the alarms' SNS topic"),
		EnableKeyRotation: jsii.Bool(true),
		Policy:            doc,
		PendingWindow:     awscdk.Duration_Days(jsii.Number(7)),
		RemovalPolicy:     awscdk.RemovalPolicy_DESTROY,
	})
}

// alarmMetrics are the metrics the alarms watch and the dashboard shows.
type alarmMetrics struct {
	dlqDepth, jobsDead, oldestMinutes, orchErrors, reconcileFailed, dispatchFailed, noWorker awscloudwatch.IMetric
	// For the dashboard only.
	created, succeeded, superseded, backlog, inService, attempt, queueAge, eventsFailed awscloudwatch.IMetric
}

func newAlarmMetrics(storage *Storage, orch *Orchestrator, recon *Reconciler, f *Fleet) *alarmMetrics {
	interval := awscdk.Duration_Minutes(jsii.Number(ReconcileEveryMinutes))
	five := awscdk.Duration_Minutes(jsii.Number(5))
	job := func(name, stat string, period awscdk.Duration) awscloudwatch.Metric {
		return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
			Namespace: jsii.String(jobmetrics.Namespace), MetricName: jsii.String(name),
			DimensionsMap: &map[string]*string{jobmetrics.DimStateBucket: storage.State.BucketName()},
			Statistic:     jsii.String(stat), Period: period,
		})
	}
	m := &alarmMetrics{}
	m.dlqDepth = orch.DLQ.MetricApproximateNumberOfMessagesVisible(&awscloudwatch.MetricOptions{Statistic: jsii.String("Maximum"), Period: five})
	m.jobsDead = job(jobmetrics.JobsDead, "Sum", five)
	// The reconciler measures the age once per pass, in milliseconds.
	m.oldestMinutes = awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
		Expression:   jsii.String("age / 60000"),
		UsingMetrics: &map[string]awscloudwatch.IMetric{"age": job(jobmetrics.OldestUnfinishedAge, "Maximum", interval)},
		Label:        jsii.String("Oldest unfinished job (minutes)"),
		Period:       interval,
	})
	m.orchErrors = orch.Function.MetricErrors(&awscloudwatch.MetricOptions{Statistic: jsii.String("Sum"), Period: five})
	m.reconcileFailed = awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
		Namespace: jsii.String(lambda.MetricNamespace), MetricName: jsii.String(lambda.MetricFailed),
		DimensionsMap: &map[string]*string{lambda.MetricDimension: recon.Function.FunctionName()},
		Statistic:     jsii.String("Sum"), Period: interval,
	})
	m.dispatchFailed = job(jobmetrics.DispatchFailed, "Sum", interval)
	m.backlog = job(jobmetrics.Backlog, "Maximum", interval)
	m.inService = awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
		Namespace: jsii.String("AWS/AutoScaling"), MetricName: jsii.String("GroupInServiceInstances"),
		DimensionsMap: &map[string]*string{"AutoScalingGroupName": f.Group.Ref()},
		// Any worker in service during the interval counts.
		Statistic: jsii.String("Maximum"), Period: interval,
	})
	// 1 when the pass saw unfinished jobs and no worker was in service;
	// a stopped fleet reports 0 in service (group metrics collection).
	m.noWorker = awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
		Expression:   jsii.String("IF(backlog > 0 AND workers < 1, 1, 0)"),
		UsingMetrics: &map[string]awscloudwatch.IMetric{"backlog": m.backlog, "workers": m.inService},
		Label:        jsii.String("Backlog with no worker in service"),
		Period:       interval,
	})
	m.created = job(jobmetrics.JobsCreated, "Sum", five)
	m.succeeded = job(jobmetrics.JobsSucceeded, "Sum", five)
	m.superseded = job(jobmetrics.JobsSuperseded, "Sum", five)
	m.attempt = job(jobmetrics.AttemptDuration, "p90", five)
	m.queueAge = job(jobmetrics.QueueAge, "p90", five)
	m.eventsFailed = job(jobmetrics.EventsFailed, "Sum", five)
	return m
}

// newDashboard shows the alarms' metrics and the jobs' flow.
func newDashboard(stack awscdk.Stack, a *Alarms, m *alarmMetrics) awscloudwatch.Dashboard {
	graph := func(title string, left ...awscloudwatch.IMetric) awscloudwatch.IWidget {
		return awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String(title), Left: &left, Width: jsii.Number(8)})
	}
	d := awscloudwatch.NewDashboard(stack, jsii.String("Dashboard"), &awscloudwatch.DashboardProps{
		DashboardName: jsii.String(*stack.StackName() + "-conveyor"),
	})
	d.AddWidgets(awscloudwatch.NewAlarmStatusWidget(&awscloudwatch.AlarmStatusWidgetProps{
		Title:  jsii.String("Alarms"),
		Alarms: &[]interfacesawscloudwatch.IAlarmRef{a.DLQDepth, a.JobsDead, a.OldestUnfinished, a.OrchestratorErrors, a.ReconcileFailed, a.DispatchFailed, a.NoWorker},
		Width:  jsii.Number(24),
	}))
	d.AddWidgets(
		graph("Jobs (per 5 min)", m.created, m.succeeded, m.jobsDead, m.superseded),
		graph("Backlog and workers in service", m.backlog, m.inService),
		graph("Oldest unfinished job (minutes)", m.oldestMinutes),
	)
	d.AddWidgets(
		graph("Attempt duration and queue age (p90, ms)", m.attempt, m.queueAge),
		graph("Failures", m.orchErrors, m.reconcileFailed, m.dispatchFailed, m.eventsFailed),
		graph("Orchestrator dead-letter queue", m.dlqDepth),
	)
	return d
}
