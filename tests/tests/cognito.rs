//! End-to-end: the stack as deployed on AWS. A second stack is deployed with
//! `PBS_DEPLOY_AUTH=cognito` and the defaults of an AWS deployment: operators sign in through its
//! own Cognito user pool (users in each group sign in with `InitiateAuth` and get their role's
//! answers from the API; a token of the dev issuer is refused there), and its webhooks refuse
//! private addresses (a receiver on 127.0.0.1 gets nothing; the local stack's parameter that
//! allows them is what the webhook tests of `flows.rs` run under).

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use aws_sdk_cognitoidentityprovider::types::{AuthFlowType, MessageActionType};
use pbs_e2e::browser::Browser;
use pbs_e2e::receiver::Receiver;
use pbs_e2e::{Stack, eventually, template_json, unique, workspace_root};
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

    the_console_takes_each_roles_cognito_sign_in(api, &tokens).await;
    a_webhook_to_a_private_address_is_refused(&stack, &outputs).await;
}

/// The console of the Cognito stack, in Chromium: each user arrives as the user pool's hosted
/// sign-in returns them (`#id_token=`), or pastes the token; the console names them and their
/// role, and what each may do follows the role in their user pool group.
async fn the_console_takes_each_roles_cognito_sign_in(api: &str, tokens: &HashMap<&str, String>) {
    let console = format!("{api}/console");
    let browser = Browser::start(1280, 900).await.unwrap();
    let wait = Duration::from_secs(20);
    for role in ["viewer", "operator", "admin"] {
        if role == "viewer" {
            browser.goto(&format!("{console}#/sign-in")).await.unwrap();
            browser.wait_for("#token", wait).await.unwrap();
            browser.fill("#token", &tokens[role]).await.unwrap();
            browser.click("#sign-in").await.unwrap();
        } else {
            let token = &tokens[role];
            browser
                .goto(&format!("{console}#id_token={token}"))
                .await
                .unwrap();
        }
        // Signed in, the console opens on its dashboard.
        browser.wait_for("#dash-totals", wait).await.unwrap();
        let who = browser.text("#who").await.unwrap();
        assert_eq!(who, format!("{role}@example.com · {role}"));
        // A manual job of the template made above, for an object that is not there: the viewer
        // is refused for its role, the others get as far as looking for the object.
        browser.goto(&format!("{console}#/jobs/new")).await.unwrap();
        browser
            .wait_for("#job-template option", wait)
            .await
            .unwrap();
        browser.fill("#job-keys", "in/not-there.txt").await.unwrap();
        browser.click("form button[type=submit]").await.unwrap();
        browser.wait_for("#job-error", wait).await.unwrap();
        let answer = browser.text("#job-error").await.unwrap();
        if role == "viewer" {
            assert!(answer.contains("needs the operator role"), "{answer}");
        } else {
            assert!(
                answer.contains("in/not-there.txt") && !answer.contains("role"),
                "{role}: {answer}"
            );
        }
        if role == "admin" {
            // The audit log names each caller as the console does, the viewer's refusal included.
            browser.goto(&format!("{console}#/audit")).await.unwrap();
            browser.wait_for("#audit", wait).await.unwrap();
            let audit = browser.text("#audit").await.unwrap();
            assert!(
                audit.contains("viewer@example.com") && audit.contains("403"),
                "{audit}"
            );
        }
        browser
            .screenshot(&workspace_root().join(format!("artifacts/console/cognito-{role}.png")))
            .await
            .unwrap();
        browser.click("#sign-out").await.unwrap();
        browser.wait_for("#token", wait).await.unwrap();
    }
}

/// The stack deployed with the defaults refuses to send a webhook to 127.0.0.1: the notification
/// is recorded failed with the reason, and the receiver there gets nothing.
async fn a_webhook_to_a_private_address_is_refused(
    stack: &Stack,
    outputs: &HashMap<String, String>,
) {
    let receiver = Receiver::start(&[]).await.unwrap();
    let parameter = format!("/pbs/{}", unique("hook-secret"));
    stack
        .ssm
        .put_parameter()
        .name(&parameter)
        .value("whsec-private-refusal")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let job_id = unique("private-hook");
    let message = json!({
        "v": 1, "job_id": job_id, "index": 0, "state": "succeeded",
        "target": {"type": "webhook", "url": receiver.url, "secret": format!("ssm:{parameter}")},
        "body": "{}",
    });
    stack
        .sqs
        .send_message()
        .queue_url(&outputs["NotifyQueueUrl"])
        .message_body(message.to_string())
        .send()
        .await
        .unwrap();
    let table = &outputs["JobsTableName"];
    let outcome: Value = eventually(
        Duration::from_secs(60),
        "the notification's outcome",
        || async {
            let item = stack
                .dynamo
                .get_item()
                .table_name(table)
                .key(
                    "job_id",
                    aws_sdk_dynamodb::types::AttributeValue::S(job_id.clone()),
                )
                .send()
                .await?;
            let recorded = item
                .item()
                .and_then(|i| i.get("notify_0"))
                .and_then(|v| v.as_s().ok());
            let outcome: Option<Value> = recorded.map(|text| serde_json::from_str(text).unwrap());
            Ok(outcome.filter(|o| o["state"] != "retrying"))
        },
    )
    .await
    .unwrap();
    assert_eq!(outcome["state"], "failed", "{outcome:#}");
    let error = outcome["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("127.0.0.1") && error.contains("WebhookAllowPrivateTargets"),
        "{outcome:#}"
    );
    assert!(receiver.received().is_empty(), "the receiver was reached");
}
