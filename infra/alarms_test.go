package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The alarms' topic: encrypted with its own key (CloudWatch cannot use
// the AWS managed one), TLS only, CloudWatch of this account may publish,
// and an e-mail subscription only when AlarmEmail is set.
func TestAlarmTopic(t *testing.T) {
	a := synth.conveyor.Alarms
	if d := cmp.Diff(plain(t, arnOf(a.Key)), props(t, a.Topic)["KmsMasterKeyId"]); d != "" {
		t.Errorf("topic key (-want +got):\n%s", d)
	}
	key := props(t, a.Key)
	if key["EnableKeyRotation"] != true {
		t.Error("alarm key rotation is off")
	}
	var cloudwatch bool
	for _, s := range key["KeyPolicy"].(map[string]interface{})["Statement"].([]interface{}) {
		m := s.(map[string]interface{})
		for _, act := range asList(m["Action"]) {
			if strings.ContainsAny(act.(string), "*?") {
				t.Errorf("key policy allows wildcard action %v", act)
			}
		}
		if flatten(m["Principal"]) == `{"Service":"cloudwatch.amazonaws.com"}` {
			cloudwatch = cmp.Equal(asList(m["Action"]), []interface{}{"kms:Decrypt", "kms:GenerateDataKey"})
		}
	}
	if !cloudwatch {
		t.Errorf("key policy does not let CloudWatch encrypt notifications: %v", key["KeyPolicy"])
	}
	var deny, allow bool
	for _, p := range resources("AWS::SNS::TopicPolicy") {
		for _, s := range p["Properties"].(map[string]interface{})["PolicyDocument"].(map[string]interface{})["Statement"].([]interface{}) {
			m := s.(map[string]interface{})
			deny = deny || (m["Effect"] == "Deny" && flatten(m["Condition"]) == `{"Bool":{"aws:SecureTransport":"false"}}`)
			allow = allow || (m["Effect"] == "Allow" && flatten(m["Principal"]) == `{"Service":"cloudwatch.amazonaws.com"}` && m["Action"] == "sns:Publish")
		}
	}
	if !deny || !allow {
		t.Errorf("topic policy: TLS-only deny %v, CloudWatch publish %v", deny, allow)
	}
	sub := resource(t, a.Subscription)
	if sub["Condition"] != "HasAlarmEmail" || !cmp.Equal(sub["Properties"], plain(t, map[string]interface{}{
		"Protocol": "email", "Endpoint": ref("AlarmEmail"), "TopicArn": ref(logicalID(a.Topic)),
	})) {
		t.Errorf("subscription %v", sub)
	}
	cond := synth.json["Conditions"].(map[string]interface{})["HasAlarmEmail"]
	if d := cmp.Diff(plain(t, map[string]interface{}{"Fn::Not": []interface{}{map[string]interface{}{"Fn::Equals": []interface{}{ref("AlarmEmail"), ""}}}}), cond); d != "" {
		t.Errorf("HasAlarmEmail (-want +got):\n%s", d)
	}
	params := synth.json["Parameters"].(map[string]interface{})
	if p := params["AlarmEmail"].(map[string]interface{}); p["Default"] != "" {
		t.Errorf("AlarmEmail default %v, want empty", p["Default"])
	}
	if p := params["OldestUnfinishedMinutes"].(map[string]interface{}); p["Default"] != float64(DefaultOldestUnfinishedMinutes) {
		t.Errorf("OldestUnfinishedMinutes default %v", p["Default"])
	}
}

// Each alarm watches its metric and notifies the topic when it fires and
// when it clears.
func TestAlarms(t *testing.T) {
	c := synth.conveyor
	a := c.Alarms
	state := []interface{}{map[string]interface{}{"Name": "StateBucket", "Value": ref(logicalID(c.Storage.State))}}
	type want struct {
		props   map[string]interface{}
		metrics []string // for metric math: the metrics it uses, Namespace/MetricName/Stat
	}
	for id, w := range map[string]want{
		logicalID(a.DLQDepth): {props: map[string]interface{}{"Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible", "Statistic": "Maximum", "Threshold": 1,
			"ComparisonOperator": "GreaterThanOrEqualToThreshold", "Dimensions": []interface{}{map[string]interface{}{"Name": "QueueName", "Value": getAtt(logicalID(c.Orch.DLQ), "QueueName")}}}},
		logicalID(a.JobsDead): {props: map[string]interface{}{"Namespace": "Conveyor", "MetricName": "JobsDead", "Statistic": "Sum", "Threshold": 1,
			"ComparisonOperator": "GreaterThanOrEqualToThreshold", "Dimensions": state}},
		logicalID(a.OrchestratorErrors): {props: map[string]interface{}{"Namespace": "AWS/Lambda", "MetricName": "Errors", "Statistic": "Sum", "Threshold": 1,
			"ComparisonOperator": "GreaterThanOrEqualToThreshold", "Dimensions": []interface{}{map[string]interface{}{"Name": "FunctionName", "Value": ref(logicalID(c.Orch.Function))}}}},
		logicalID(a.ReconcileFailed): {props: map[string]interface{}{"Namespace": "Conveyor", "MetricName": "ReconcileFailed", "Statistic": "Sum", "Threshold": 1, "Period": 900,
			"ComparisonOperator": "GreaterThanOrEqualToThreshold", "Dimensions": []interface{}{map[string]interface{}{"Name": "Function", "Value": ref(logicalID(c.Recon.Function))}}}},
		logicalID(a.DispatchFailed): {props: map[string]interface{}{"Namespace": "Conveyor", "MetricName": "DispatchFailed", "Statistic": "Sum", "Threshold": 1, "Period": 900,
			"EvaluationPeriods": 2, "DatapointsToAlarm": 2, "ComparisonOperator": "GreaterThanOrEqualToThreshold", "Dimensions": state}},
		logicalID(a.OldestUnfinished): {props: map[string]interface{}{"Threshold": ref("OldestUnfinishedMinutes"), "ComparisonOperator": "GreaterThanThreshold"},
			metrics: []string{"Conveyor/OldestUnfinishedAge/Maximum"}},
		logicalID(a.NoWorker): {props: map[string]interface{}{"Threshold": 1, "ComparisonOperator": "GreaterThanOrEqualToThreshold", "EvaluationPeriods": NoWorkerPeriods},
			metrics: []string{"AWS/AutoScaling/GroupInServiceInstances/Maximum", "Conveyor/Backlog/Maximum"}},
	} {
		p := resources("AWS::CloudWatch::Alarm")[id]["Properties"].(map[string]interface{})
		if p == nil {
			t.Errorf("no alarm %s", id)
			continue
		}
		for k, v := range w.props {
			if d := cmp.Diff(plain(t, v), p[k]); d != "" {
				t.Errorf("%s %s (-want +got):\n%s", id, k, d)
			}
		}
		topic := plain(t, []interface{}{ref(logicalID(a.Topic))})
		if !cmp.Equal(topic, p["AlarmActions"]) || !cmp.Equal(topic, p["OKActions"]) || p["TreatMissingData"] != "notBreaching" {
			t.Errorf("%s: actions %v / %v, missing data %v; want the topic, notBreaching", id, p["AlarmActions"], p["OKActions"], p["TreatMissingData"])
		}
		if w.metrics == nil {
			continue
		}
		var got []string
		for _, q := range p["Metrics"].([]interface{}) {
			ms, ok := q.(map[string]interface{})["MetricStat"].(map[string]interface{})
			if !ok {
				continue
			}
			m := ms["Metric"].(map[string]interface{})
			got = append(got, m["Namespace"].(string)+"/"+m["MetricName"].(string)+"/"+ms["Stat"].(string))
			if m["Namespace"] == "Conveyor" && !cmp.Equal(m["Dimensions"], plain(t, state)) {
				t.Errorf("%s: %s dimensions %v, want the state bucket", id, m["MetricName"], m["Dimensions"])
			}
			if m["Namespace"] == "AWS/AutoScaling" && !cmp.Equal(m["Dimensions"], plain(t, []interface{}{map[string]interface{}{"Name": "AutoScalingGroupName", "Value": ref(logicalID(c.Fleet.Group))}})) {
				t.Errorf("%s: group dimensions %v", id, m["Dimensions"])
			}
		}
		sortStringSlice(got)
		if d := cmp.Diff(w.metrics, got); d != "" {
			t.Errorf("%s metrics (-want +got):\n%s", id, d)
		}
	}
	// "Backlog while no worker is in service" needs the group's metrics.
	if !strings.Contains(flatten(props(t, c.Fleet.Group)["MetricsCollection"]), "GroupInServiceInstances") {
		t.Error("the group does not collect GroupInServiceInstances")
	}
	expr := flatten(props(t, a.NoWorker)["Metrics"])
	if !strings.Contains(expr, "IF(backlog > 0 AND workers < 1, 1, 0)") {
		t.Errorf("no-worker expression: %s", expr)
	}
}

// The dashboard shows the alarms and every metric they watch.
func TestDashboard(t *testing.T) {
	body := flatten(props(t, synth.conveyor.Alarms.Dashboard)["DashboardBody"])
	for _, want := range []string{"JobsCreated", "JobsSucceeded", "JobsDead", "JobsSuperseded", "Backlog", "GroupInServiceInstances",
		"OldestUnfinishedAge", "AttemptDuration", "QueueAge", "Errors", "ReconcileFailed", "DispatchFailed", "EventsFailed",
		"ApproximateNumberOfMessagesVisible", `"type":"alarm"`} {
		if !strings.Contains(body, want) {
			t.Errorf("dashboard lacks %s", want)
		}
	}
	if n := len(resources("AWS::CloudWatch::Alarm")); n != 8 {
		t.Errorf("%d alarms, want 8 (seven to the topic, the fleet's scaling alarm)", n)
	}
}
