package main

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/aws/constructs-go/constructs/v10"
	"github.com/google/go-cmp/cmp"
)

// stmt is an expected Allow statement.
func stmt(actions []string, resource interface{}, condition ...map[string]interface{}) map[string]interface{} {
	s := map[string]interface{}{"Effect": "Allow", "Action": actions, "Resource": resource}
	if len(condition) > 0 {
		s["Condition"] = condition[0]
	}
	return s
}

// normalized returns statements with Action/Resource always as lists, so
// CDK's "one action is a string" does not matter.
func normalized(t *testing.T, statements interface{}) []interface{} {
	t.Helper()
	var out []interface{}
	for _, s := range plain(t, statements).([]interface{}) {
		m := s.(map[string]interface{})
		m["Action"] = asList(m["Action"])
		m["Resource"] = asList(m["Resource"])
		out = append(out, m)
	}
	// In no particular order: a role's statements may come from two
	// policies.
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]) < fmt.Sprint(out[j]) })
	return out
}

// policyOf returns the statements of the role's policies: its default
// policy, and for the worker the release's assets (WorkerAssetsPolicy).
func policyOf(t *testing.T, role constructs.IConstruct) []interface{} {
	t.Helper()
	var found []interface{}
	n := 0
	for _, p := range resources("AWS::IAM::Policy") {
		props := p["Properties"].(map[string]interface{})
		for _, r := range props["Roles"].([]interface{}) {
			if cmp.Equal(r, plain(t, ref(logicalID(role)))) {
				n++
				found = append(found, props["PolicyDocument"].(map[string]interface{})["Statement"].([]interface{})...)
			}
		}
	}
	if n > 2 || (n == 2 && role != constructs.IConstruct(synth.conveyor.Worker.Role)) {
		t.Fatalf("role %s has %d policies", logicalID(role), n)
	}
	return found
}

func TestOrchestratorPolicy(t *testing.T) {
	c := synth.conveyor
	s := c.Storage
	tag := map[string]interface{}{"StringEquals": map[string]interface{}{"ssm:resourceTag/conveyor:role": "worker"}}
	ec2Tag := map[string]interface{}{"StringEquals": map[string]interface{}{"aws:ResourceTag/conveyor:role": "worker"}}
	want := []interface{}{
		stmt([]string{"ssm:SendCommand"}, join("arn:", ref("AWS::Partition"), ":ssm:", ref("AWS::Region"), ":", ref("AWS::AccountId"), ":document/", ref("RunJobDocument"))),
		stmt([]string{"ssm:SendCommand"}, instancesArn(), tag),
		stmt([]string{"ec2:StartInstances"}, instancesArn(), ec2Tag),
		stmt([]string{"ec2:DescribeInstances", "ssm:DescribeInstanceInformation"}, "*"),
		stmt([]string{"s3:GetObject", "s3:PutObject"}, join(arnOf(s.State), "/jobs/*")),
		stmt([]string{"s3:DeleteObject", "s3:PutObject"}, []interface{}{join(arnOf(s.State), "/active/*"), join(arnOf(s.State), "/done/*")}),
		stmt([]string{"s3:GetObject", "s3:GetObjectVersion"}, join(arnOf(s.Input), "/*")),
		stmt([]string{"logs:CreateLogStream", "logs:PutLogEvents"}, arnOf(c.Orch.LogGroup)),
		stmt([]string{"events:PutEvents"}, defaultBusArn()),
		// added by CDK for the on-failure destination
		stmt([]string{"sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"}, arnOf(c.Orch.DLQ)),
	}
	want = append(want, fleetDispatchStatements()...)
	if d := cmp.Diff(normalized(t, want), normalized(t, policyOf(t, c.Orch.Role))); d != "" {
		t.Errorf("orchestrator policy (-want +got):\n%s", d)
	}
	if r := props(t, c.Orch.Role); r["ManagedPolicyArns"] != nil || r["Policies"] != nil {
		t.Errorf("orchestrator role has other policies: %v %v", r["ManagedPolicyArns"], r["Policies"])
	}
}

// The reconciler's role: dispatch as the orchestrator does, job records,
// the index and its cursors, the input bucket's versions; no delete of a
// job record, no DLQ.
func TestReconcilerPolicy(t *testing.T) {
	c := synth.conveyor
	s := c.Storage
	tag := map[string]interface{}{"StringEquals": map[string]interface{}{"ssm:resourceTag/conveyor:role": "worker"}}
	ec2Tag := map[string]interface{}{"StringEquals": map[string]interface{}{"aws:ResourceTag/conveyor:role": "worker"}}
	want := []interface{}{
		stmt([]string{"ssm:SendCommand"}, join("arn:", ref("AWS::Partition"), ":ssm:", ref("AWS::Region"), ":", ref("AWS::AccountId"), ":document/", ref("RunJobDocument"))),
		stmt([]string{"ssm:SendCommand"}, instancesArn(), tag),
		stmt([]string{"ec2:StartInstances"}, instancesArn(), ec2Tag),
		stmt([]string{"ec2:DescribeInstances", "ssm:DescribeInstanceInformation"}, "*"),
		stmt([]string{"s3:GetObject", "s3:PutObject"}, join(arnOf(s.State), "/jobs/*")),
		stmt([]string{"s3:PutObjectTagging"}, join(arnOf(s.State), "/jobs/*")),
		stmt([]string{"s3:DeleteObject", "s3:PutObject"}, []interface{}{join(arnOf(s.State), "/active/*"), join(arnOf(s.State), "/done/*")}),
		stmt([]string{"s3:DeleteObject", "s3:GetObject", "s3:PutObject"}, join(arnOf(s.State), "/reconcile/*")),
		stmt([]string{"s3:ListBucket"}, arnOf(s.State)),
		stmt([]string{"s3:GetObject", "s3:GetObjectVersion"}, join(arnOf(s.Input), "/*")),
		stmt([]string{"s3:ListBucket", "s3:ListBucketVersions"}, arnOf(s.Input)),
		stmt([]string{"logs:CreateLogStream", "logs:PutLogEvents"}, arnOf(c.Recon.LogGroup)),
		stmt([]string{"events:PutEvents"}, defaultBusArn()),
	}
	want = append(want, fleetDispatchStatements()...)
	if d := cmp.Diff(normalized(t, want), normalized(t, policyOf(t, c.Recon.Role))); d != "" {
		t.Errorf("reconciler policy (-want +got):\n%s", d)
	}
	if r := props(t, c.Recon.Role); r["ManagedPolicyArns"] != nil || r["Policies"] != nil {
		t.Errorf("reconciler role has other policies: %v %v", r["ManagedPolicyArns"], r["Policies"])
	}
}

func TestWorkerPolicy(t *testing.T) {
	c := synth.conveyor
	s := c.Storage
	asset := func(key *string) interface{} {
		return join("arn:", ref("AWS::Partition"), ":s3:::", map[string]interface{}{"Fn::Sub": "cdk-hnb659fds-assets-${AWS::AccountId}-${AWS::Region}"}, "/"+*key)
	}
	want := []interface{}{
		stmt([]string{"s3:GetObject", "s3:GetObjectVersion"}, join(arnOf(s.Input), "/*")),
		stmt([]string{"s3:ListBucket"}, arnOf(s.Input)),
		stmt([]string{"s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"}, join(arnOf(s.Output), "/*")),
		stmt([]string{"s3:ListBucket"}, arnOf(s.Output)),
		stmt([]string{"s3:GetObject", "s3:PutObject"}, join(arnOf(s.State), "/jobs/*")),
		stmt([]string{"s3:PutObjectTagging"}, join(arnOf(s.State), "/jobs/*")),
		stmt([]string{"s3:DeleteObject", "s3:PutObject"}, []interface{}{join(arnOf(s.State), "/active/*"), join(arnOf(s.State), "/done/*")}),
		stmt([]string{"s3:PutObject"}, join(arnOf(s.State), "/logs/*")),
		// the release manifest and the update association (release.go)
		stmt([]string{"ssm:GetParameter"}, join("arn:", ref("AWS::Partition"), ":ssm:", ref("AWS::Region"), ":", ref("AWS::AccountId"), ":parameter", ref(logicalID(c.Worker.Release.Parameter)))),
		stmt([]string{"ssm:ListInstanceAssociations", "ssm:PutComplianceItems", "ssm:UpdateInstanceAssociationStatus"}, instancesArn()),
		stmt([]string{"ssm:DescribeAssociation"}, []interface{}{
			join("arn:", ref("AWS::Partition"), ":ssm:", ref("AWS::Region"), ":", ref("AWS::AccountId"), ":association/", getAtt(logicalID(c.Worker.Release.Association), "AssociationId")),
			updateDocArn(c), instancesArn()}),
		stmt([]string{"ssm:DescribeDocument", "ssm:GetDocument"}, updateDocArn(c)),
		// the binary, the configuration and the bundle assets, and no other
		stmt([]string{"s3:GetObject"}, []interface{}{asset(c.Worker.Binary.S3ObjectKey()), asset(c.Config.ConfigAsset.S3ObjectKey()), asset(c.Config.BundleAsset.S3ObjectKey())}),
		stmt([]string{"logs:CreateLogStream", "logs:PutLogEvents"}, arnOf(c.Worker.JobLogs)),
		stmt([]string{"events:PutEvents"}, defaultBusArn()),
		stmt([]string{"logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"}, arnOf(c.Worker.CommandLogs)),
		stmt([]string{"ssm:UpdateInstanceInformation"}, instancesArn()),
		stmt([]string{
			"ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage", "ec2messages:FailMessage",
			"ec2messages:GetEndpoint", "ec2messages:GetMessages", "ec2messages:SendReply",
			"ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
			"ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel",
		}, "*"),
	}
	want = append(want, fleetWorkerStatements()...)
	if d := cmp.Diff(normalized(t, want), normalized(t, policyOf(t, c.Worker.Role))); d != "" {
		t.Errorf("worker policy (-want +got):\n%s", d)
	}
	if r := props(t, c.Worker.Role); r["ManagedPolicyArns"] != nil || r["Policies"] != nil {
		t.Errorf("worker role has other policies: %v %v", r["ManagedPolicyArns"], r["Policies"])
	}
}

// updateDocArn is the ARN of the update document.
func updateDocArn(c *Conveyor) map[string]interface{} {
	return join("arn:", ref("AWS::Partition"), ":ssm:", ref("AWS::Region"), ":", ref("AWS::AccountId"), ":document/", ref(logicalID(c.Worker.Release.Document)))
}

// policyDocuments returns every identity policy document in the template:
// AWS::IAM::Policy, AWS::IAM::ManagedPolicy and roles' inline policies.
func policyDocuments() map[string]interface{} {
	docs := map[string]interface{}{}
	for id, r := range resources("AWS::IAM::Policy") {
		docs[id] = r["Properties"].(map[string]interface{})["PolicyDocument"]
	}
	for id, r := range resources("AWS::IAM::ManagedPolicy") {
		docs[id] = r["Properties"].(map[string]interface{})["PolicyDocument"]
	}
	for id, r := range resources("AWS::IAM::Role") {
		inline, _ := r["Properties"].(map[string]interface{})["Policies"].([]interface{})
		for i, p := range inline {
			docs[fmt.Sprintf("%s/Policies/%d", id, i)] = p.(map[string]interface{})["PolicyDocument"]
		}
	}
	return docs
}

// wildcardProblems lists why an identity-policy statement breaks least
// privilege: a wildcard in an action, NotAction/NotResource, or Resource "*"
// for an action that is not in UnscopableActions.
func wildcardProblems(statement map[string]interface{}) []string {
	if statement["Effect"] != "Allow" {
		return nil
	}
	var out []string
	for _, k := range []string{"NotAction", "NotResource"} {
		if statement[k] != nil {
			out = append(out, k+" is used")
		}
	}
	actions := asList(statement["Action"])
	starResource := false
	for _, r := range asList(statement["Resource"]) {
		if r == "*" {
			starResource = true
		}
	}
	for _, a := range actions {
		s := fmt.Sprint(a)
		if strings.ContainsAny(s, "*?") {
			out = append(out, "wildcard action "+s)
			continue
		}
		if _, ok := UnscopableActions[s]; starResource && !ok {
			out = append(out, "Resource \"*\" for "+s+", which supports resource-level permissions")
		}
	}
	return out
}

func TestWildcardCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    map[string]interface{}
		bad  bool
	}{
		{"scoped", stmt([]string{"s3:GetObject"}, "arn:aws:s3:::b/*"), false},
		{"unscopable on star", stmt([]string{"ec2:DescribeInstances"}, "*"), false},
		{"star action", stmt([]string{"*"}, "arn:aws:s3:::b"), true},
		{"service wildcard", stmt([]string{"s3:Get*"}, "arn:aws:s3:::b/*"), true},
		{"scopable on star", stmt([]string{"ec2:StartInstances"}, "*"), true},
		{"mixed on star", stmt([]string{"ec2:DescribeInstances", "s3:PutObject"}, []interface{}{"*"}), true},
		{"deny is not checked", map[string]interface{}{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}, false},
	} {
		got := wildcardProblems(plain(t, tc.s).(map[string]interface{}))
		if (len(got) > 0) != tc.bad {
			t.Errorf("%s: problems %v, want bad=%v", tc.name, got, tc.bad)
		}
	}
}

func TestNoWildcards(t *testing.T) {
	docs := policyDocuments()
	if len(docs) < 3 {
		t.Fatalf("found %d policy documents; the walker is not seeing the template", len(docs))
	}
	for id, doc := range docs {
		for _, s := range doc.(map[string]interface{})["Statement"].([]interface{}) {
			for _, p := range wildcardProblems(s.(map[string]interface{})) {
				t.Errorf("%s: %s", id, p)
			}
		}
	}
	// Resource policies (bucket and queue policies) may not grant wildcard
	// actions either; their Deny statements (enforceSSL) may.
	for _, typ := range []string{"AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy"} {
		for id, r := range resources(typ) {
			for _, s := range r["Properties"].(map[string]interface{})["PolicyDocument"].(map[string]interface{})["Statement"].([]interface{}) {
				m := s.(map[string]interface{})
				for _, a := range asList(m["Action"]) {
					if m["Effect"] == "Allow" && strings.ContainsAny(fmt.Sprint(a), "*?") {
						t.Errorf("%s: allows wildcard action %v", id, a)
					}
				}
			}
		}
	}
	// AWS managed policies are not in the template: only the documented
	// ones may be attached.
	for id, r := range resources("AWS::IAM::Role") {
		for _, arn := range asList(r["Properties"].(map[string]interface{})["ManagedPolicyArns"]) {
			s := flatten(arn)
			name := s[strings.Index(s, ":policy/")+len(":policy/"):]
			if _, ok := AllowedManagedPolicies[name]; !ok || !strings.HasPrefix(s, "arn:{Ref:AWS::Partition}:iam::aws:policy/") {
				t.Errorf("%s: managed policy %s is not in AllowedManagedPolicies", id, s)
			}
		}
	}
}
