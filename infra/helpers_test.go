package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/constructs-go/constructs/v10"
)

// logicalID is the template logical ID of a construct's CloudFormation
// resource.
func logicalID(c constructs.IConstruct) string {
	el, ok := c.(awscdk.CfnElement)
	if !ok {
		el = c.Node().DefaultChild().(awscdk.CfnElement)
	}
	return *synth.conveyor.Stack.GetLogicalId(el)
}

// resource returns the template resource with the construct's logical ID.
func resource(t *testing.T, c constructs.IConstruct) map[string]interface{} {
	t.Helper()
	id := logicalID(c)
	r, ok := synth.json["Resources"].(map[string]interface{})[id].(map[string]interface{})
	if !ok {
		t.Fatalf("no resource %s in the template", id)
	}
	return r
}

func props(t *testing.T, c constructs.IConstruct) map[string]interface{} {
	t.Helper()
	p, _ := resource(t, c)["Properties"].(map[string]interface{})
	return p
}

// Intrinsic functions as they appear in the template.
func ref(id string) map[string]interface{} { return map[string]interface{}{"Ref": id} }
func getAtt(id, attr string) map[string]interface{} {
	return map[string]interface{}{"Fn::GetAtt": []interface{}{id, attr}}
}
func join(parts ...interface{}) map[string]interface{} {
	return map[string]interface{}{"Fn::Join": []interface{}{"", parts}}
}

// arnOf is the GetAtt Arn of a construct's resource.
func arnOf(c constructs.IConstruct) map[string]interface{} { return getAtt(logicalID(c), "Arn") }

// instancesArn is arn:<partition>:ec2:<region>:<account>:instance/*.
func instancesArn() map[string]interface{} {
	return join("arn:", ref("AWS::Partition"), ":ec2:", ref("AWS::Region"), ":", ref("AWS::AccountId"), ":instance/*")
}

// defaultBusArn is arn:<partition>:events:<region>:<account>:event-bus/default.
func defaultBusArn() map[string]interface{} {
	return join("arn:", ref("AWS::Partition"), ":events:", ref("AWS::Region"), ":", ref("AWS::AccountId"), ":event-bus/default")
}

// plain round-trips v through JSON so Go literals compare with the template.
func plain(t *testing.T, v interface{}) interface{} {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out interface{}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// flatten renders a Fn::Join/Fn::Base64 string with each intrinsic shown as
// {Ref:X} or {X.Attr}, so scripts can be read and searched.
func flatten(v interface{}) string {
	switch x := v.(type) {
	case string:
		return x
	case map[string]interface{}:
		if b, ok := x["Fn::Base64"]; ok {
			return flatten(b)
		}
		if j, ok := x["Fn::Join"].([]interface{}); ok {
			var sb strings.Builder
			for i, p := range j[1].([]interface{}) {
				if i > 0 {
					sb.WriteString(j[0].(string))
				}
				sb.WriteString(flatten(p))
			}
			return sb.String()
		}
		if sub, ok := x["Fn::Sub"].(string); ok {
			return "{Sub:" + sub + "}"
		}
		if r, ok := x["Ref"]; ok {
			return fmt.Sprintf("{Ref:%v}", r)
		}
		if g, ok := x["Fn::GetAtt"].([]interface{}); ok {
			return fmt.Sprintf("{%v.%v}", g[0], g[1])
		}
		b, _ := json.Marshal(x)
		return string(b)
	}
	return fmt.Sprint(v)
}

// tags returns a resource's Tags as key -> value, intrinsics flattened.
func tags(p map[string]interface{}) map[string]string {
	out := map[string]string{}
	list, _ := p["Tags"].([]interface{})
	for _, t := range list {
		m := t.(map[string]interface{})
		// A parameter's Ref shows as {Ref:Name} (flatten).
		out[flatten(m["Key"])] = flatten(m["Value"])
	}
	return out
}

// asList returns a string-or-list IAM field as a sorted list.
func asList(v interface{}) []interface{} {
	var out []interface{}
	switch x := v.(type) {
	case []interface{}:
		out = append(out, x...)
	case nil:
	default:
		out = []interface{}{x}
	}
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]) < fmt.Sprint(out[j]) })
	return out
}
