//! End-to-end: the stack as deployed on AWS signs operators in through its own Cognito user pool
//! (not the local dev issuer). A second stack is deployed with `PBS_DEPLOY_AUTH=cognito`; users in
//! each group sign in with `InitiateAuth` and get their role's answers from the API; a token of
//! the dev issuer is refused there.

use std::collections::HashMap;
use std::process::Command;

use aws_sdk_cognitoidentityprovider::types::{AuthFlowType, MessageActionType};
use pbs_e2e::{Stack, template_json, unique, workspace_root};
use serde_json::{Value, json};

/// Deploys the stack again as `name` with a Cognito user pool; its outputs.
fn deploy_with_cognito(stack: &Stack, name: &str) -> HashMap<String, String> {
    let emulator = stack.output("EmulatorUrl");
    let port = emulator.rsplit(':').next().unwrap();
    let out = Command::new("bash")
        .arg("infra/deploy-local.sh")
        .arg(name)
        .current_dir(workspace_root())
        .env("PBS_EMULATOR_PORT", port)
        .env("PBS_DEPLOY_AUTH", "cognito")
        .env("PBS_DEPLOY_PREBUILT", "1")
        .output()
        .expect("deploy-local runs");
    assert!(
        out.status.success(),
        "deploying {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap();
    let text = std::fs::read_to_string(path.trim()).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Calls the API of the stack at `api` with `token`.
async fn call(
    api: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let http = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http
        .request(method, format!("{api}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cognito_users_sign_in_and_get_their_roles_answers() {
    let stack = Stack::connect().await.unwrap();
    let name = unique("pbs-cognito");
    let outputs = deploy_with_cognito(&stack, &name);
    let (pool, client, api) = (
        &outputs["UserPoolId"],
        &outputs["UserPoolClientId"],
        &outputs["LocalApiUrl"],
    );
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(stack.output("EmulatorUrl"))
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let idp = aws_sdk_cognitoidentityprovider::Client::new(&config);
    let password = "Correct-Horse-42";
    let mut tokens = HashMap::new();
    for role in ["viewer", "operator", "admin"] {
        let user = format!("{role}@example.com");
        idp.admin_create_user()
            .user_pool_id(pool)
            .username(&user)
            .temporary_password("Temporary-Pass-1")
            .message_action(MessageActionType::Suppress)
            .send()
            .await
            .unwrap();
        idp.admin_set_user_password()
            .user_pool_id(pool)
            .username(&user)
            .password(password)
            .permanent(true)
            .send()
            .await
            .unwrap();
        idp.admin_add_user_to_group()
            .user_pool_id(pool)
            .username(&user)
            .group_name(role)
            .send()
            .await
            .unwrap();
        let signed_in = idp
            .initiate_auth()
            .client_id(client)
            .auth_flow(AuthFlowType::UserPasswordAuth)
            .auth_parameters("USERNAME", &user)
            .auth_parameters("PASSWORD", password)
            .send()
            .await
            .unwrap();
        let result = signed_in.authentication_result().expect("signed in");
        tokens.insert(role, result.id_token().expect("an ID token").to_owned());
    }

    for role in ["viewer", "operator", "admin"] {
        let (status, me) = call(api, &tokens[role], "GET", "/api/v1/me", None).await;
        assert_eq!(status, 200, "{role}: {me}");
        assert_eq!(me["role"], role, "{me}");
    }
    let (status, _) = call(api, &tokens["viewer"], "GET", "/api/v1/jobs", None).await;
    assert_eq!(status, 200);
    let template = template_json(&unique("cog"), "some-bucket", "in/**", "default", "{key}");
    let (status, answer) = call(
        api,
        &tokens["operator"],
        "POST",
        "/api/v1/templates",
        Some(&template),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = call(
        api,
        &tokens["admin"],
        "POST",
        "/api/v1/templates",
        Some(&template),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = call(
        api,
        &tokens["operator"],
        "POST",
        "/api/v1/jobs",
        Some(&json!({})),
    )
    .await;
    assert_eq!(
        status, 400,
        "an operator may create jobs (this body is incomplete): {answer}"
    );
    // This stack trusts its user pool only: a token of the local dev issuer is refused.
    let dev = stack.token("admin").unwrap();
    let (status, answer) = call(api, &dev, "GET", "/api/v1/me", None).await;
    assert_eq!(status, 401, "{answer}");
}
