//! ELBv2 on the wire, checked by a third party (botocore, the aws CLI's
//! library, from the workspace's `.tools/venv`, against ELBv2's own
//! service model), in both directions a server meets:
//! - the requests the aws CLI sends, serialized by botocore, decode into
//!   our request structs with the values given;
//! - the XML our response structs write parses in botocore, and the
//!   fields endstate relies on come out right, the error document too.

// Tests fail by panicking; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

use crate::botocore::python;
use endstate_wire::elbv2::*;
use endstate_wire::{Params, Response};

/// Prints one `Operation<TAB>form body` line per request, each serialized
/// by botocore's query serializer and form-encoded as the aws CLI does.
const SERIALIZE: &str = r#"
import sys, urllib.parse
import botocore.session
from botocore.serialize import create_serializer
model = botocore.session.get_session().get_service_model('elbv2')
serializer = create_serializer('query')
requests = [
  ('CreateLoadBalancer', {'Name': 'web', 'Subnets': ['subnet-1', 'subnet-2'], 'Scheme': 'internal',
      'Type': 'application', 'Tags': [{'Key': 'endstate:project', 'Value': 'a b+c'}]}),
  ('DescribeLoadBalancers', {'Names': ['web', 'api'], 'PageSize': 10}),
  ('DeleteLoadBalancer', {'LoadBalancerArn': 'arn:lb'}),
  ('CreateTargetGroup', {'Name': 'web-blue', 'Protocol': 'HTTP', 'Port': 8080, 'VpcId': 'vpc-1',
      'HealthCheckProtocol': 'HTTP', 'HealthCheckPath': '/healthz', 'HealthCheckIntervalSeconds': 5,
      'HealthCheckTimeoutSeconds': 2, 'HealthyThresholdCount': 2, 'UnhealthyThresholdCount': 3,
      'Matcher': {'HttpCode': '200-299'}, 'TargetType': 'instance'}),
  ('DescribeTargetGroups', {'LoadBalancerArn': 'arn:lb', 'Marker': 'm1', 'PageSize': 2}),
  ('DeleteTargetGroup', {'TargetGroupArn': 'arn:tg'}),
  ('ModifyTargetGroupAttributes', {'TargetGroupArn': 'arn:tg',
      'Attributes': [{'Key': 'deregistration_delay.timeout_seconds', 'Value': '5'}]}),
  ('RegisterTargets', {'TargetGroupArn': 'arn:tg', 'Targets': [{'Id': 'i-1', 'Port': 8081}, {'Id': 'i-2'}]}),
  ('DeregisterTargets', {'TargetGroupArn': 'arn:tg', 'Targets': [{'Id': 'i-1'}]}),
  ('DescribeTargetHealth', {'TargetGroupArn': 'arn:tg'}),
  ('CreateListener', {'LoadBalancerArn': 'arn:lb', 'Protocol': 'HTTP', 'Port': 80,
      'DefaultActions': [{'Type': 'forward', 'TargetGroupArn': 'arn:a'}]}),
  ('DescribeListeners', {'LoadBalancerArn': 'arn:lb'}),
  ('ModifyListener', {'ListenerArn': 'arn:l', 'DefaultActions': [{'Type': 'forward', 'ForwardConfig': {
      'TargetGroups': [{'TargetGroupArn': 'arn:a', 'Weight': 90}, {'TargetGroupArn': 'arn:b', 'Weight': 10}]}}]}),
]
for op, params in requests:
    request = serializer.serialize_to_request(params, model.operation_model(op))
    print(op + '\t' + urllib.parse.urlencode(request['body']))
"#;

#[test]
fn requests_the_aws_cli_sends_decode() {
    let lines = python(SERIALIZE, "");
    let decoded: Vec<Elbv2Request> = lines
        .lines()
        .map(|line| {
            let (op, body) = line.split_once('\t').unwrap();
            let request =
                Elbv2Request::from_form(body).unwrap_or_else(|e| panic!("{op}: {e} in {body}"));
            assert_eq!(request.action(), op);
            request
        })
        .collect();
    assert_eq!(decoded.len(), 13);
    let weighted = |pairs: &[(&str, u32)]| ForwardAction {
        target_groups: pairs
            .iter()
            .map(|(arn, weight)| WeightedTargetGroup {
                target_group_arn: arn.to_string(),
                weight: *weight,
            })
            .collect(),
    };
    let expected = vec![
        Elbv2Request::CreateLoadBalancer(CreateLoadBalancerRequest {
            name: "web".into(),
            subnets: vec!["subnet-1".into(), "subnet-2".into()],
            security_groups: vec![],
            scheme: Some("internal".into()),
            load_balancer_type: Some("application".into()),
            ip_address_type: None,
            tags: vec![("endstate:project".into(), "a b+c".into())],
        }),
        Elbv2Request::DescribeLoadBalancers(DescribeLoadBalancersRequest {
            load_balancer_arns: vec![],
            names: vec!["web".into(), "api".into()],
            marker: None,
            page_size: Some(10),
        }),
        Elbv2Request::DeleteLoadBalancer(DeleteLoadBalancerRequest {
            load_balancer_arn: "arn:lb".into(),
        }),
        Elbv2Request::CreateTargetGroup(CreateTargetGroupRequest {
            name: "web-blue".into(),
            protocol: Some("HTTP".into()),
            port: Some(8080),
            vpc_id: Some("vpc-1".into()),
            target_type: Some("instance".into()),
            health_check: TargetGroupHealthCheck {
                protocol: "HTTP".into(),
                port: "traffic-port".into(),
                path: Some("/healthz".into()),
                interval_seconds: 5,
                timeout_seconds: 2,
                healthy_threshold: 2,
                unhealthy_threshold: 3,
                matcher: Some("200-299".into()),
            },
            tags: vec![],
        }),
        Elbv2Request::DescribeTargetGroups(DescribeTargetGroupsRequest {
            load_balancer_arn: Some("arn:lb".into()),
            target_group_arns: vec![],
            names: vec![],
            marker: Some("m1".into()),
            page_size: Some(2),
        }),
        Elbv2Request::DeleteTargetGroup(DeleteTargetGroupRequest {
            target_group_arn: "arn:tg".into(),
        }),
        Elbv2Request::ModifyTargetGroupAttributes(ModifyTargetGroupAttributesRequest {
            target_group_arn: "arn:tg".into(),
            attributes: vec![(DEREGISTRATION_DELAY_ATTRIBUTE.into(), "5".into())],
        }),
        Elbv2Request::RegisterTargets(RegisterTargetsRequest {
            target_group_arn: "arn:tg".into(),
            targets: vec![
                TargetDescription {
                    id: "i-1".into(),
                    port: Some(8081),
                },
                TargetDescription {
                    id: "i-2".into(),
                    port: None,
                },
            ],
        }),
        Elbv2Request::DeregisterTargets(DeregisterTargetsRequest {
            target_group_arn: "arn:tg".into(),
            targets: vec![TargetDescription {
                id: "i-1".into(),
                port: None,
            }],
        }),
        Elbv2Request::DescribeTargetHealth(DescribeTargetHealthRequest {
            target_group_arn: "arn:tg".into(),
            targets: vec![],
        }),
        Elbv2Request::CreateListener(CreateListenerRequest {
            load_balancer_arn: "arn:lb".into(),
            protocol: Some("HTTP".into()),
            port: Some(80),
            default_action: weighted(&[("arn:a", 1)]),
            tags: vec![],
        }),
        Elbv2Request::DescribeListeners(DescribeListenersRequest {
            load_balancer_arn: Some("arn:lb".into()),
            ..Default::default()
        }),
        Elbv2Request::ModifyListener(ModifyListenerRequest {
            listener_arn: "arn:l".into(),
            protocol: None,
            port: None,
            default_action: Some(weighted(&[("arn:a", 90), ("arn:b", 10)])),
        }),
    ];
    assert_eq!(decoded, expected);
    // And what we send is what botocore would: same names, same values.
    for request in &expected {
        let ours = request.to_params();
        let back = Elbv2Request::from_params(&Params::from_form(&ours.to_form()).unwrap());
        assert_eq!(back.as_ref(), Ok(request));
    }
}

/// Parses each `<Operation>.xml` in the directory with botocore's query
/// parser and ELBv2's output shapes, and checks the fields.
const PARSE: &str = r#"
import sys, os
import botocore.session
from botocore.parsers import create_parser
d = sys.argv[1]
model = botocore.session.get_session().get_service_model('elbv2')
parser = create_parser('query')
def parse(op, status=200):
    body = open(os.path.join(d, op + '.xml'), 'rb').read()
    shape = model.operation_model(op).output_shape if status == 200 else None
    return parser.parse({'body': body, 'headers': {}, 'status_code': status}, shape)
r = parse('CreateLoadBalancer')
lb = r['LoadBalancers'][0]
assert lb['LoadBalancerArn'] == 'arn:lb' and lb['LoadBalancerName'] == 'web', lb
assert lb['DNSName'] == '127.0.0.1:18080' and lb['State'] == {'Code': 'active'}, lb
assert r['ResponseMetadata']['RequestId'] == 'req-1', r
r = parse('DescribeTargetGroups')
tg = r['TargetGroups'][0]
assert tg['TargetGroupArn'] == 'arn:tg' and tg['Port'] == 8080 and tg['Protocol'] == 'HTTP', tg
assert tg['HealthCheckPath'] == '/healthz' and tg['HealthCheckIntervalSeconds'] == 5, tg
assert tg['HealthyThresholdCount'] == 2 and tg['UnhealthyThresholdCount'] == 3, tg
assert tg['Matcher'] == {'HttpCode': '200-299'} and tg['LoadBalancerArns'] == ['arn:lb'], tg
assert r['NextMarker'] == 'm1', r
r = parse('DescribeTargetHealth')
h = r['TargetHealthDescriptions']
assert h[0]['Target'] == {'Id': 'i-1', 'Port': 8080} and h[0]['TargetHealth'] == {'State': 'healthy'}, h
assert h[1]['TargetHealth'] == {'State': 'draining', 'Reason': 'Target.DeregistrationInProgress',
    'Description': 'Target deregistration is in progress'}, h
r = parse('ModifyListener')
l = r['Listeners'][0]
assert l['ListenerArn'] == 'arn:l' and l['Port'] == 80 and l['Protocol'] == 'HTTP', l
a = l['DefaultActions'][0]
assert a['Type'] == 'forward', a
assert a['ForwardConfig']['TargetGroups'] == [{'TargetGroupArn': 'arn:a', 'Weight': 90},
    {'TargetGroupArn': 'arn:b', 'Weight': 10}], a
r = parse('DescribeListeners')
a = r['Listeners'][0]['DefaultActions'][0]
assert a['TargetGroupArn'] == 'arn:a' and a['ForwardConfig']['TargetGroups'][0]['Weight'] == 1, a
r = parse('ModifyTargetGroupAttributes')
assert r['Attributes'] == [{'Key': 'deregistration_delay.timeout_seconds', 'Value': '5'}], r
for op in ['DeleteLoadBalancer', 'DeleteTargetGroup', 'RegisterTargets', 'DeregisterTargets']:
    assert parse(op)['ResponseMetadata']['RequestId'] == 'req-e', op
r = parse('Error', 400)
assert r['Error'] == {'Type': 'Sender', 'Code': 'TargetGroupNotFound',
    'Message': 'One or more target groups not found'}, r
assert r['ResponseMetadata']['RequestId'] == 'req-9', r
print('ok')
"#;

#[test]
fn botocore_parses_what_a_server_writes() {
    let dir = tempfile::tempdir().unwrap();
    let lb_arns = vec!["arn:lb".to_string()];
    let listener = |groups: Vec<WeightedTargetGroup>| Listener {
        arn: "arn:l".into(),
        load_balancer_arn: "arn:lb".into(),
        protocol: "HTTP".into(),
        port: 80,
        default_action: ForwardAction {
            target_groups: groups,
        },
    };
    let weighted = |arn: &str, weight: u32| WeightedTargetGroup {
        target_group_arn: arn.into(),
        weight,
    };
    let empty = || Some("req-e".to_string());
    let documents = [
        (
            "CreateLoadBalancer",
            CreateLoadBalancerResponse {
                request_id: Some("req-1".into()),
                load_balancers: vec![LoadBalancer {
                    arn: "arn:lb".into(),
                    name: "web".into(),
                    dns_name: "127.0.0.1:18080".into(),
                    state: "active".into(),
                    tags: vec![("k".into(), "v".into())],
                }],
            }
            .to_xml(),
        ),
        (
            "DescribeTargetGroups",
            DescribeTargetGroupsResponse {
                request_id: Some("req-2".into()),
                target_groups: vec![TargetGroup {
                    arn: "arn:tg".into(),
                    name: "web-blue".into(),
                    protocol: "HTTP".into(),
                    port: 8080,
                    vpc_id: None,
                    health_check: TargetGroupHealthCheck {
                        protocol: "HTTP".into(),
                        port: "traffic-port".into(),
                        path: Some("/healthz".into()),
                        interval_seconds: 5,
                        timeout_seconds: 2,
                        healthy_threshold: 2,
                        unhealthy_threshold: 3,
                        matcher: Some("200-299".into()),
                    },
                    load_balancer_arns: lb_arns,
                    tags: vec![],
                }],
                next_marker: Some("m1".into()),
            }
            .to_xml(),
        ),
        (
            "DescribeTargetHealth",
            DescribeTargetHealthResponse {
                request_id: Some("req-3".into()),
                target_health_descriptions: vec![
                    TargetHealthDescription {
                        target: TargetDescription {
                            id: "i-1".into(),
                            port: Some(8080),
                        },
                        state: "healthy".into(),
                        reason: None,
                        description: None,
                    },
                    TargetHealthDescription {
                        target: TargetDescription {
                            id: "i-2".into(),
                            port: Some(8080),
                        },
                        state: "draining".into(),
                        reason: Some("Target.DeregistrationInProgress".into()),
                        description: Some("Target deregistration is in progress".into()),
                    },
                ],
            }
            .to_xml(),
        ),
        (
            "ModifyListener",
            ModifyListenerResponse {
                request_id: Some("req-4".into()),
                listeners: vec![listener(vec![weighted("arn:a", 90), weighted("arn:b", 10)])],
            }
            .to_xml(),
        ),
        (
            "DescribeListeners",
            DescribeListenersResponse {
                request_id: Some("req-5".into()),
                listeners: vec![listener(vec![weighted("arn:a", 1)])],
                next_marker: None,
            }
            .to_xml(),
        ),
        (
            "ModifyTargetGroupAttributes",
            ModifyTargetGroupAttributesResponse {
                request_id: Some("req-6".into()),
                attributes: vec![(DEREGISTRATION_DELAY_ATTRIBUTE.into(), "5".into())],
            }
            .to_xml(),
        ),
        (
            "DeleteLoadBalancer",
            DeleteLoadBalancerResponse {
                request_id: empty(),
            }
            .to_xml(),
        ),
        (
            "DeleteTargetGroup",
            DeleteTargetGroupResponse {
                request_id: empty(),
            }
            .to_xml(),
        ),
        (
            "RegisterTargets",
            RegisterTargetsResponse {
                request_id: empty(),
            }
            .to_xml(),
        ),
        (
            "DeregisterTargets",
            DeregisterTargetsResponse {
                request_id: empty(),
            }
            .to_xml(),
        ),
        (
            "Error",
            Elbv2ErrorResponse::sender(
                "TargetGroupNotFound",
                "One or more target groups not found",
                "req-9",
            )
            .to_xml(),
        ),
    ];
    for (name, xml) in documents {
        std::fs::write(dir.path().join(format!("{name}.xml")), xml).unwrap();
    }
    let out = python(PARSE, dir.path().to_str().unwrap());
    assert_eq!(out.trim(), "ok");
}
