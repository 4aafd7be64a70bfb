//! The gcp and azure presets, path by path.

use super::*;

const FLAVOR: &[(&str, &str)] = &[("Metadata-Flavor", "Google")];

#[test]
fn gcp_preset() {
    let set = builtin("gcp");
    let p = set.policy("gcp").unwrap();
    let d = Out::Deny(403);
    check_table(
        p,
        &[
            ("GET", "/", FLAVOR, Out::Allow, "root"),
            ("GET", "/computeMetadata/", FLAVOR, Out::Allow, "compute-metadata-index"),
            ("GET", "/computeMetadata/v1/", FLAVOR, Out::Allow, "v1-index"),
            ("GET", "/computeMetadata/v1/instance/id", FLAVOR, Out::Allow, "v1"),
            ("HEAD", "/computeMetadata/v1/instance/id", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/zone", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/hostname?alt=text", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/?alt=json", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/attributes/", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/attributes/cluster-name", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/maintenance-event?wait_for_change=true&timeout_sec=60&last_etag=abc", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/project/project-id", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/network-interfaces/0/ip", FLAVOR, Out::Allow, "v1"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/", FLAVOR, Out::Allow, "service-accounts"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/default/email", FLAVOR, Out::Allow, "service-accounts"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/default/scopes", FLAVOR, Out::Allow, "service-accounts"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/?recursive=true", FLAVOR, Out::Allow, "service-accounts"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/default/?recursive=true&alt=json", FLAVOR, Out::Allow, "service-accounts"),
            // kube-env, any version, slash, query, method
            ("GET", "/computeMetadata/v1/instance/attributes/kube-env", FLAVOR, d, "kube-env"),
            ("GET", "/computeMetadata/v1/instance/attributes/kube-env/", FLAVOR, d, "kube-env"),
            ("GET", "/computeMetadata/v1/instance/attributes/kube-env?alt=text", FLAVOR, d, "kube-env"),
            ("GET", "/computeMetadata/v1beta1/instance/attributes/kube-env", NONE, d, "kube-env"),
            ("GET", "/computeMetadata/v1beta1/instance/attributes/kube-env", FLAVOR, d, "kube-env"),
            ("POST", "/computeMetadata/v1/instance/attributes/kube-env", FLAVOR, d, "kube-env"),
            // tokens
            ("GET", "/computeMetadata/v1/instance/service-accounts/default/token", FLAVOR, d, "service-account-token"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/default/token?scopes=x", FLAVOR, d, "service-account-token"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/sa@p.iam.gserviceaccount.com/token", FLAVOR, d, "service-account-token"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://x", FLAVOR, d, "service-account-identity"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/default/identity", NONE, d, "service-account-identity"),
            ("GET", "/computeMetadata/v1beta1/instance/service-accounts/default/token", FLAVOR, d, "service-account-token"),
            // recursive outside the service-accounts tree, in any form
            ("GET", "/computeMetadata/v1/?recursive=true", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/?recursive=true", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/attributes/?recursive=true", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/attributes/?RECURSIVE=TRUE", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/attributes/?ReCuRsIvE", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/attributes/?%72ecursive=true", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/attributes/?recursive", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/attributes/?alt=json&recursive=false", FLAVOR, d, "recursive"),
            ("GET", "/?recursive=true", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/service-accounts/?RECURSIVE=true", FLAVOR, d, "recursive"),
            ("GET", "/computeMetadata/v1/instance/attributes/?%2572ecursive=true", FLAVOR, Out::Refused(400), ""),
            ("GET", "/computeMetadata/v1/instance/attributes/?recursive=true;alt=json", FLAVOR, Out::Refused(400), ""),
            ("GET", "/computeMetadata/v1/instance/?alt=json&recursive=true&recursive=false", FLAVOR, Out::Refused(400), ""),
            // Metadata-Flavor is required, exactly
            ("GET", "/computeMetadata/v1/instance/id", NONE, d, "metadata-flavor-required"),
            ("GET", "/", NONE, d, "metadata-flavor-required"),
            ("GET", "/computeMetadata/v1/instance/id", &[("Metadata-Flavor", "google")], d, "metadata-flavor-required"),
            ("GET", "/computeMetadata/v1/instance/id", &[("Metadata-Flavor", "Google "), ], d, "metadata-flavor-required"),
            ("GET", "/computeMetadata/v1/instance/id", &[("Metadata-Flavor", "Google"), ("Metadata-Flavor", "x")], d, "metadata-flavor-required"),
            ("GET", "/computeMetadata/v1/instance/id", &[("X-Google-Metadata-Request", "True")], d, "metadata-flavor-required"),
            // everything else
            ("GET", "/computeMetadata/v1beta1/instance/id", FLAVOR, d, DEFAULT_DENY_ID),
            ("GET", "/0.1/meta-data/attributes/kube-env", FLAVOR, d, "kube-env"),
            ("GET", "/computeMetadata/v1/instance/id?foo=1", FLAVOR, d, DEFAULT_DENY_ID),
            ("GET", "/computeMetadata/v1/instance/id?ALT=json", FLAVOR, d, DEFAULT_DENY_ID),
            ("POST", "/computeMetadata/v1/instance/id", FLAVOR, d, DEFAULT_DENY_ID),
            ("PUT", "/computeMetadata/v1/instance/guest-attributes/x", FLAVOR, d, DEFAULT_DENY_ID),
            ("GET", "/computemetadata/v1/instance/id", FLAVOR, d, DEFAULT_DENY_ID),
            ("GET", "/computeMetadata/v1/instance/attributes/../attributes/kube-env", FLAVOR, Out::Refused(400), ""),
            ("GET", "/computeMetadata/v1/instance/network-interfaces/0/external-ip/../../attributes/kube-env", FLAVOR, Out::Refused(400), ""),
            ("GET", "/computeMetadata/v1//instance/attributes/kube-env", FLAVOR, Out::Refused(400), ""),
            ("GET", "/computeMetadata/v1/instance/attributes//kube-env", FLAVOR, Out::Refused(400), ""),
        ],
    );
    let rh: Vec<(String, String)> = p
        .response_headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(rh, [("metadata-flavor".to_owned(), "Google".to_owned())]);
}

#[test]
fn gcp_missing_flavor_reason() {
    let set = builtin("gcp");
    let p = set.policy("gcp").unwrap();
    let t = canonicalize_str(&Method::GET, "/computeMetadata/v1/instance/id").unwrap();
    let h = HeaderMap::new();
    let view = RequestView {
        method: &Method::GET,
        target: &t,
        headers: &h,
    };
    let d = p.decide(&view);
    assert_eq!(
        d.deny_body(&view).unwrap(),
        "the Metadata-Flavor: Google header is required\n"
    );
    assert!(matches!(d.action, Action::Deny { reason, .. }
        if reason == "the Metadata-Flavor: Google header is required"));
}

const MD: &[(&str, &str)] = &[("Metadata", "true")];

#[test]
fn azure_preset() {
    let set = builtin("azure");
    let p = set.policy("azure").unwrap();
    let d = Out::Deny(403);
    check_table(
        p,
        &[
            ("GET", "/metadata/instance?api-version=2021-02-01", MD, Out::Allow, "instance"),
            ("HEAD", "/metadata/instance?api-version=2021-02-01", MD, Out::Allow, "instance"),
            ("GET", "/metadata/instance/?api-version=2021-02-01", MD, Out::Allow, "instance"),
            ("GET", "/metadata/instance/compute?api-version=2021-02-01", MD, Out::Allow, "instance"),
            ("GET", "/metadata/instance/compute/vmId?api-version=2017-08-01&format=text", MD, Out::Allow, "instance"),
            ("GET", "/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress?api-version=2017-08-01&format=text", MD, Out::Allow, "instance"),
            ("GET", "/metadata/attested/document?api-version=2020-09-01", MD, Out::Allow, "attested"),
            ("GET", "/metadata/attested/document?api-version=2020-09-01&nonce=1234567890", MD, Out::Allow, "attested"),
            ("GET", "/metadata/versions", MD, Out::Allow, "versions"),
            ("GET", "/metadata/loadbalancer?api-version=2020-10-01", MD, Out::Allow, "loadbalancer"),
            ("GET", "/metadata/scheduledevents?api-version=2020-07-01", MD, Out::Allow, "scheduledevents"),
            // managed identity: denied with or without the header, any method, any query
            ("GET", "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/", MD, d, "managed-identity"),
            ("GET", "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net", NONE, d, "managed-identity"),
            ("GET", "/metadata/identity", MD, d, "managed-identity"),
            ("GET", "/metadata/identity/", MD, d, "managed-identity"),
            ("POST", "/metadata/identity/oauth2/token", MD, d, "managed-identity"),
            ("GET", "/metadata/instance/compute/userData?api-version=2021-01-01&format=text", MD, d, "user-data"),
            // header and api-version required
            ("GET", "/metadata/instance?api-version=2021-02-01", NONE, d, "metadata-header-required"),
            ("GET", "/metadata/instance?api-version=2021-02-01", &[("Metadata", "True")], d, "metadata-header-required"),
            ("GET", "/metadata/versions", NONE, d, "metadata-header-required"),
            ("GET", "/metadata/instance", MD, d, "api-version-required"),
            ("GET", "/metadata/instance?format=json", MD, d, "api-version-required"),
            ("GET", "/metadata/instance?API-VERSION=2021-02-01", MD, d, "api-version-required"),
            ("GET", "/metadata/attested/document?nonce=1", MD, d, "api-version-required"),
            ("GET", "/metadata/scheduledevents", MD, d, "api-version-required"),
            // everything else
            ("GET", "/metadata/instance?api-version=2021-02-01&extra=1", MD, d, DEFAULT_DENY_ID),
            ("POST", "/metadata/scheduledevents?api-version=2020-07-01", MD, d, DEFAULT_DENY_ID),
            ("GET", "/metadata/attested/document?api-version=2020-09-01&format=json", MD, d, DEFAULT_DENY_ID),
            ("GET", "/metadata/versions?api-version=2020-07-01", MD, d, DEFAULT_DENY_ID),
            ("GET", "/Metadata/instance?api-version=2021-02-01", MD, d, DEFAULT_DENY_ID),
            ("GET", "/machine?comp=goalstate", MD, d, DEFAULT_DENY_ID),
            ("GET", "/metadata/instance?api-version=2021-02-01&api-version=2017-08-01", MD, Out::Refused(400), ""),
        ],
    );
}
