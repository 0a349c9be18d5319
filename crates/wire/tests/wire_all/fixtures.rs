//! Parsing tests on documents captured from third parties: responses from
//! moto 5.2.5 (`fixtures/moto/`, captured with curl against `moto_server`)
//! and a request body as the aws CLI (botocore) encodes it
//! (`fixtures/aws_cli/`).

// Tests fail by panicking; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

use endstate_wire::*;

fn fixture(path: &str) -> String {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

#[test]
fn moto_run_instances() {
    let r = RunInstancesResponse::from_xml(&fixture("moto/run_instances.xml")).unwrap();
    // moto's request ids are a constant placeholder.
    assert_eq!(r.request_id.as_deref(), Some("request-id"));
    assert!(r.reservation.reservation_id.starts_with("r-"));
    assert_eq!(r.reservation.instances.len(), 2);
    let i = &r.reservation.instances[0];
    assert!(i.instance_id.starts_with("i-"));
    assert_eq!(i.image_id, "ami-12c6146b");
    assert_eq!(i.instance_type, "t3.micro");
    assert_eq!(i.state, InstanceStateInfo::named("pending"));
    assert_eq!(i.availability_zone, "us-east-1b");
    assert_eq!(i.client_token.as_deref(), Some("tok-1"));
    assert_eq!(i.key_name.as_deref(), Some("k1"));
    assert!(i.subnet_id.as_deref().unwrap().starts_with("subnet-"));
    assert!(i.private_ip_address.is_some());
    assert!(i.launch_time.ends_with('Z'));
    assert_eq!(
        i.tags,
        vec![
            Tag::new("endstate:project", "demo"),
            Tag::new("Name", "a & b")
        ]
    );
    let m = i.metadata_options.as_ref().unwrap();
    assert_eq!(m.http_tokens.as_deref(), Some("required"));
    assert_eq!(m.http_put_response_hop_limit, Some(2));
    assert_eq!(m.http_endpoint.as_deref(), Some("enabled"));
    assert_eq!(r.reservation.instances[1].ami_launch_index, Some(1));
}

#[test]
fn moto_describe_instances_pages_by_reservation() {
    let page1 =
        DescribeInstancesResponse::from_xml(&fixture("moto/describe_instances_page1.xml")).unwrap();
    // MaxResults=5 gave five reservations, one of which holds two instances.
    assert_eq!(page1.reservations.len(), 5);
    assert_eq!(page1.instances().count(), 6);
    let token = page1.next_token.clone().unwrap();
    // moto's NextToken is the id of this page's last reservation.
    assert_eq!(page1.reservations.last().unwrap().reservation_id, token);
    assert!(page1
        .instances()
        .all(|i| i.state.name == "running" && i.state.code == 16));

    let page2 =
        DescribeInstancesResponse::from_xml(&fixture("moto/describe_instances_page2.xml")).unwrap();
    assert!(page2.reservations.iter().all(|r| r.reservation_id != token));
    assert_eq!(page2.instances().count(), 2);
    assert_eq!(page2.next_token, None);
    // Launched without a ClientToken, moto reports a fixed "ABCDE".
    assert_eq!(
        page2.instances().next().unwrap().client_token.as_deref(),
        Some("ABCDE")
    );

    let empty =
        DescribeInstancesResponse::from_xml(&fixture("moto/describe_instances_empty.xml")).unwrap();
    assert!(empty.reservations.is_empty());
    assert_eq!(empty.next_token, None);
}

#[test]
fn moto_terminate_then_describe() {
    let t = TerminateInstancesResponse::from_xml(&fixture("moto/terminate_instances.xml")).unwrap();
    assert_eq!(t.instances.len(), 2);
    assert_eq!(
        t.instances[0].current_state,
        InstanceStateInfo::named("shutting-down")
    );
    assert_eq!(
        t.instances[0].previous_state,
        InstanceStateInfo::named("running")
    );
    let d = DescribeInstancesResponse::from_xml(&fixture("moto/describe_instances_terminated.xml"))
        .unwrap();
    let i = d.instances().next().unwrap();
    assert_eq!(i.instance_id, t.instances[0].instance_id);
    assert_eq!(i.state, InstanceStateInfo::named("terminated"));
}

#[test]
fn moto_tags_zones_images() {
    // moto omits <return>true</return>.
    assert!(CreateTagsResponse::from_xml(&fixture("moto/create_tags.xml")).is_ok());
    assert!(DeleteTagsResponse::from_xml(&fixture("moto/delete_tags.xml")).is_ok());
    let z = DescribeAvailabilityZonesResponse::from_xml(&fixture(
        "moto/describe_availability_zones.xml",
    ))
    .unwrap();
    let names: Vec<_> = z.zones.iter().map(|z| z.zone_name.as_str()).collect();
    assert!(
        names.starts_with(&["us-east-1a", "us-east-1b", "us-east-1c"]),
        "{names:?}"
    );
    assert!(z
        .zones
        .iter()
        .all(|z| z.state == "available" && z.region_name == "us-east-1"));
    let images = DescribeImagesResponse::from_xml(&fixture("moto/describe_images.xml")).unwrap();
    assert_eq!(images.images.len(), 1);
    assert_eq!(images.images[0].image_id, "ami-12c6146b");
    assert_eq!(images.images[0].state, "available");
    assert!(images.images[0].name.is_some());
}

#[test]
fn moto_error_documents() {
    let e = ErrorResponse::from_xml(&fixture("moto/error_not_found_instance_id.xml")).unwrap();
    assert_eq!(e.first().unwrap().code, "InvalidInstanceID.NotFound");
    assert_eq!(e.request_id.as_deref(), Some("request-id"));
    let e = ErrorResponse::from_xml(&fixture("moto/error_malformed_image_id.xml")).unwrap();
    assert_eq!(e.first().unwrap().code, "InvalidAMIID.Malformed");
    assert!(e.first().unwrap().message.contains("not-an-ami"));
    // An unknown action makes moto answer HTML with a 500: not an error
    // document, and the parser must say so rather than invent one.
    assert!(ErrorResponse::from_xml(&fixture("moto/error_unknown_action.html")).is_err());
}

#[test]
fn error_document_roundtrips_and_reads_aws_samples() {
    let e = ErrorResponse::single("RequestLimitExceeded", "Request limit exceeded.", "req-9");
    assert_eq!(ErrorResponse::from_xml(&e.to_xml()).unwrap(), e);
    // As AWS documents it: no namespace, `RequestID`.
    let aws = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>InsufficientInstanceCapacity</Code><Message>We currently do not have sufficient capacity.</Message></Error></Errors><RequestID>ea966190-f9aa-478e-9ede-example</RequestID></Response>";
    let parsed = ErrorResponse::from_xml(aws).unwrap();
    assert_eq!(parsed.first().unwrap().code, "InsufficientInstanceCapacity");
    assert_eq!(
        parsed.request_id.as_deref(),
        Some("ea966190-f9aa-478e-9ede-example")
    );
}

#[test]
fn aws_cli_run_instances_body_parses() {
    let body = fixture("aws_cli/run_instances.form");
    let Ec2Request::RunInstances(r) = Ec2Request::from_form(body.trim()).unwrap() else {
        panic!("not RunInstances");
    };
    assert_eq!(r.image_id, "ami-12c6146b");
    assert_eq!((r.min_count, r.max_count), (3, 3));
    assert_eq!(r.client_token.as_deref(), Some("tok-cli"));
    assert_eq!(r.availability_zone.as_deref(), Some("us-east-1c"));
    assert_eq!(r.security_group_ids, vec!["sg-1", "sg-2"]);
    assert_eq!(r.iam_instance_profile_name.as_deref(), Some("prof"));
    assert_eq!(r.user_data.unwrap().as_bytes(), b"echo hi & bye");
    assert_eq!(r.block_device_mappings[0].device_name, "/dev/xvda");
    assert_eq!(
        r.block_device_mappings[0].ebs.as_ref().unwrap().volume_size,
        Some(30)
    );
    assert_eq!(
        r.metadata_options.unwrap().http_put_response_hop_limit,
        Some(2)
    );
    assert_eq!(r.tag_specifications.len(), 2);
    assert_eq!(r.tag_specifications[0].tags[1], Tag::new("Name", "a b+c"));
    assert_eq!(r.tag_specifications[1].resource_type, "volume");
}
