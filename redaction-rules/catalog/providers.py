#!/usr/bin/env python3
"""Generates redaction-rules/secrets-providers.toml and src/redact/samples_providers.rs.

Why a generator: the provider catalog is a few hundred token formats of two shapes, and every
rule needs a regex, keywords, a positive sample and a near-miss negative that agree with each
other. Writing them out by hand invites drift (a sample one character short of its own regex);
here each format is one line of facts and the regex, keywords and samples are derived from it.

Shapes:
- P(id, desc, prefixes, cls, min, max, suffix=""): a token that starts with a fixed prefix
  (`glcbt-`, `pscale_tkn_`). Searched only at the prefix (the keyword), anchored.
- C(id, desc, names, cls, min, max, prefix=""): a token without a prefix of its own (or with a
  short, common one), recognised by the provider's name earlier on the same line
  (`ADAFRUIT_KEY=...`, `<algolia-key>...`, `setProperty("bitbucket.secret", "...")`).
- R(id, desc, regex, keywords, sample, negative, entropy=None): anything else.

Formats are facts about providers (their documentation, and public scanner catalogs such as
gitleaks' default config and the kingfisher/Nosey Parker rule sets, consulted for what exists);
regexes and samples are written here. Run: python3 redaction-rules/catalog/providers.py
"""
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Character classes: regex class, sample generator class (src/redact/samples.rs `class`).
CLS = {
    "hex": ("[a-f0-9]", "H"),
    "HEX": ("[A-F0-9]", "X"),
    "xhex": ("[a-fA-F0-9]", "H"),
    "alnum": ("[A-Za-z0-9]", "A"),
    "lower": ("[a-z0-9]", "l"),
    "upper": ("[A-Z0-9]", "u"),
    "letters": ("[A-Za-z]", "a"),
    "b64url": ("[A-Za-z0-9_\\-]", "b"),
    "b64": ("[A-Za-z0-9+/]", "B"),
    "digits": ("[0-9]", "D"),
    "b32": ("[A-Z2-7]", "V"),
    "b32l": ("[a-z2-7]", "o"),
}

P_ENTRIES = []
C_ENTRIES = []
R_ENTRIES = []


def P(id, desc, prefixes, cls, mn, mx=None, suffix="", entropy=None):
    P_ENTRIES.append((id, desc, [prefixes] if isinstance(prefixes, str) else prefixes, cls, mn, mx or mn, suffix, entropy))


def C(id, desc, names, cls, mn, mx=None, prefix="", entropy=None):
    C_ENTRIES.append((id, desc, [names] if isinstance(names, str) else names, cls, mn, mx or mn, prefix, entropy))


def R(id, desc, regex, keywords, template, secret, negative, path="notes/config.txt", entropy=None, window=None):
    R_ENTRIES.append((id, desc, regex, keywords, template, secret, negative, path, entropy, window))


# ---------------------------------------------------------------- source hosting and CI
P("gitlab-cicd-job-token", "GitLab CI/CD job token", "glcbt-", "b64url", 20, 40)
P("gitlab-deploy-token", "GitLab deploy token", "gldt-", "b64url", 20, 40)
P("gitlab-feature-flag-client-token", "GitLab feature flag client token", "glffct-", "b64url", 20, 40)
P("gitlab-feed-token", "GitLab feed token", "glft-", "b64url", 20, 40)
P("gitlab-incoming-mail-token", "GitLab incoming mail token", "glimt-", "b64url", 25, 40)
P("gitlab-kubernetes-agent-token", "GitLab Kubernetes agent token", "glagent-", "b64url", 50, 80)
P("gitlab-oauth-app-secret", "GitLab OAuth application secret", "gloas-", "b64url", 64, 80)
P("gitlab-scim-token", "GitLab SCIM token", "glsoat-", "b64url", 20, 40)
P("gitlab-session-cookie", "GitLab session cookie", "_gitlab_session=", "lower", 32, 32)
P("bitbucket-app-password", "Bitbucket app password / API token", "ATBB", "alnum", 32, 32, entropy=3.5)
P("bitbucket-access-token", "Bitbucket repository/workspace access token", "ATCTT3xFfGN0", "b64url", 150, 250)
P("buildkite-api-token", "Buildkite user access token", "bkua_", "hex", 40)
P("circleci-personal-token", "CircleCI personal API token", "CCIPAT_", "alnum", 22, 22, suffix="_{hex}40")
P("circleci-project-token", "CircleCI project API token", "CCIPRJ_", "alnum", 22, 22, suffix="_{hex}40")
P("sonarqube-token", "SonarQube/SonarCloud token", ["sqp_", "sqa_", "squ_"], "hex", 40)
P("sourcegraph-access-token", "Sourcegraph access token", "sgp_", "hex", 40, 58)
P("octopus-deploy-api-key", "Octopus Deploy API key", "API-", "upper", 26, 32, entropy=3.0)
P("harness-pat", "Harness personal/service account token", ["pat.", "sat."], "b64url", 22, 22, suffix=".{alnum}24.{alnum}20")
P("artifactory-api-key", "JFrog Artifactory API key", "AKCp", "alnum", 69, 69)
P("artifactory-reference-token", "JFrog Artifactory reference token", "cmVmd", "alnum", 59, 59)
P("crates-io-token", "crates.io API token", "cio", "alnum", 32, 32, entropy=3.5)
P("dockerhub-oat", "Docker Hub organization access token", "dckr_oat_", "b64url", 32, 40)
P("gitea-token", "Gitea/Forgejo access token (with name)", ["gitea_token=", "forgejo_token="], "hex", 40)
P("infracost-api-token", "Infracost API token", "ico-", "alnum", 32)
P("scalingo-api-token", "Scalingo API token", ["tk-us-", "tk-eu-"], "b64url", 48)
P("settlemint-token", "SettleMint access token", ["sm_aat_", "sm_pat_", "sm_sat_"], "alnum", 16, 16, entropy=3.0)
P("vault-recovery-token", "HashiCorp Vault recovery token", "hvr.", "b64url", 90, 300)
P("deno-deploy-token", "Deno Deploy access token", ["ddp_", "ddw_"], "alnum", 36)
P("netlify-pat", "Netlify personal access token", "nfp_", "alnum", 36, 40)
P("render-api-key", "Render API key", "rnd_", "alnum", 32)
P("vercel-token", "Vercel access token (prefixed)", ["vcp_", "vci_", "vca_", "vcr_", "vck_"], "alnum", 40, 64)
P("frameio-api-token", "Frame.io developer token", "fio-u-", "b64url", 64, 64)
P("figma-pat", "Figma personal access token", "figd_", "b64url", 40, 43)
P("flyio-macaroon", "Fly.io macaroon token", ["fm1a_", "fm1r_", "fm2_"], "b64", 100, 800)
P("railway-token-prefixed", "Railway project token (with name)", "railway_token=", "hex", 32)
P("snyk-token-v2", "Snyk API token (named)", "snyk_token=", "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
# ---------------------------------------------------------------- chat and collaboration
P("slack-config-access-token", "Slack configuration access token", ["xoxe.xoxp-", "xoxe.xoxb-"], "upper", 160, 170, entropy=3.0)
P("slack-config-refresh-token", "Slack configuration refresh token", "xoxe-1-", "upper", 140, 150, entropy=3.0)
P("slack-legacy-token", "Slack legacy token", ["xoxo-", "xoxs-"], "digits", 10, 12, suffix="-{digits}10-{digits}12-{hex}32")
P("slack-legacy-workspace-token", "Slack legacy workspace/refresh token", ["xoxa-2-", "xoxr-"], "alnum", 20, 48)
P("slack-legacy-bot-token", "Slack legacy bot token", "xoxb-", "digits", 8, 12, suffix="-{alnum}24")
P("mattermost-pat", "Mattermost personal access token (named)", "mattermost_token=", "lower", 26)
P("microsoft-teams-webhook", "Microsoft Teams incoming webhook", "webhook.office.com/webhookb2/", "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12@{hex}8-{hex}4-{hex}4-{hex}4-{hex}12/IncomingWebhook/{hex}32/{hex}8-{hex}4-{hex}4-{hex}4-{hex}12")
P("zapier-webhook", "Zapier catch hook URL", "hooks.zapier.com/hooks/catch/", "digits", 5, 9, suffix="/{lower}6")
P("ifttt-webhook", "IFTTT webhook key", "maker.ifttt.com/use/", "b64url", 22, 43)
P("notion-integration-token", "Notion integration secret", "secret_", "alnum", 43, 43, entropy=4.0)
P("notion-api-token", "Notion API token", "ntn_", "alnum", 46, 46)
P("linear-oauth-token", "Linear OAuth token", "lin_oauth_", "hex", 64)
P("clickup-api-token", "ClickUp personal token", "pk_", "digits", 6, 10, suffix="_{upper}32")
P("contentful-pat", "Contentful personal access token", "CFPAT-", "b64url", 43)
P("pinterest-access-token", "Pinterest access token", "pina_", "alnum", 96, 120)
P("instagram-access-token", "Instagram Graph access token", "IGQV", "b64url", 100, 300)
P("facebook-page-access-token", "Facebook/Meta access token", ["EAAC", "EAAM", "EAAG", "EAAB"], "alnum", 100, 400, entropy=4.0)
P("twitter-bearer-token", "Twitter/X app bearer token", "AAAAAAAAAAAAAAAAAAAAA", "b64url", 80, 120)
P("hubspot-private-app-token", "HubSpot private app token", ["pat-na1-", "pat-eu1-", "pat-na2-", "pat-ap1-"], "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
P("zoho-oauth-token", "Zoho OAuth access/refresh token", "1000.", "hex", 32, 32, suffix=".{hex}32")
P("salesforce-access-token", "Salesforce session/access token", "00D", "alnum", 12, 15, suffix="!{b64url}80")
P("pubnub-secret-key", "PubNub secret key", "sec-c-", "b64", 40, 60)
P("pubnub-publish-key", "PubNub publish key", "pub-c-", "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
P("sendinblue-api-key", "Brevo (Sendinblue) API key", "xkeysib-", "hex", 64, 64, suffix="-{alnum}16")
P("sendinblue-smtp-key", "Brevo (Sendinblue) SMTP key", "xsmtpsib-", "hex", 64, 64, suffix="-{alnum}16")
P("mailgun-pub-key", "Mailgun public validation key", "pubkey-", "hex", 32)
P("mandrill-api-key", "Mandrill API key (named)", "md-", "b64url", 22, 22, entropy=3.5)
P("postmark-server-token-named", "Postmark server token (named)", "postmark_server_token=", "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
# ---------------------------------------------------------------- cloud and infrastructure
P("aws-session-token", "AWS temporary session token", ["IQoJb3JpZ2luX2Vj", "FwoGZXIvYXdzE"], "b64", 100, 1200)
P("aws-bedrock-api-key", "Amazon Bedrock API key", "ABSK", "b64", 100, 200)
P("aws-mws-key", "Amazon MWS auth token", "amzn.mws.", "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
P("aws-appsync-api-key", "AWS AppSync API key", "da2-", "lower", 26)
P("tencent-secret-id", "Tencent Cloud SecretId", "AKID", "alnum", 32, 36)
P("scaleway-access-key", "Scaleway access key", "SCW", "upper", 17)
P("ibm-cloud-iam-key-named", "IBM Cloud IAM API key (named)", "ibmcloud_api_key=", "b64url", 44)
P("linode-token-named", "Linode personal access token (named)", "linode_token=", "hex", 64)
P("digitalocean-spaces-key", "DigitalOcean Spaces access key", "DO00", "upper", 16, 16, entropy=3.0)
P("hetzner-token-named", "Hetzner Cloud API token (named)", "hcloud_token=", "alnum", 64)
P("cloudflare-api-token-v2", "Cloudflare user API token (prefixed)", "cfut_", "b64url", 40, 64)
P("cloudflare-account-token", "Cloudflare account API token (prefixed)", "cfat_", "b64url", 40, 64)
P("azure-devops-pat-named", "Azure DevOps PAT (named)", "azure_devops_pat=", "b32l", 52)
P("google-oauth-refresh-token", "Google OAuth refresh token", "1//0", "b64url", 40, 200)
P("alibaba-sts-token", "Alibaba Cloud STS access key id", "STS.", "alnum", 20, 40, entropy=3.5)
P("databricks-oauth-secret", "Databricks OAuth secret", "dose", "hex", 32, 36)
P("snowflake-pat", "Snowflake programmatic access token (named)", "snowflake_token=", "b64url", 40, 400)
P("confluent-api-key-named", "Confluent Cloud API key (named)", "confluent_api_key=", "upper", 16)
P("neon-api-key", "Neon API key", "napi_", "lower", 64)
P("supabase-secret-key", "Supabase secret API key", "sb_secret_", "b64url", 31, 64)
P("upstash-token-named", "Upstash REST token (named)", "upstash_redis_rest_token=", "b64url", 40, 200)
P("cockroachdb-api-key", "CockroachDB Cloud API key", "CCDB1_", "alnum", 22, 22, suffix="_{alnum}40")
P("clickhouse-cloud-key", "ClickHouse Cloud API secret", "4b1d", "alnum", 38)
P("fastly-api-token-named", "Fastly API token (named)", "fastly_api_token=", "b64url", 32)
P("akamai-client-token", "Akamai EdgeGrid client token / access token", "akab-", "lower", 16, 16, suffix="-{lower}16")
P("openstack-app-credential", "OpenStack application credential secret (named)", "application_credential_secret=", "b64url", 40, 100)
# ---------------------------------------------------------------- payments and commerce
P("stripe-restricted-key-prod", "Stripe key (prod mode)", ["sk_prod_", "rk_prod_"], "alnum", 24, 99)
P("razorpay-key-id", "Razorpay key id", ["rzp_live_", "rzp_test_"], "alnum", 14)
P("flutterwave-secret-key", "Flutterwave secret key", ["FLWSECK_TEST-", "FLWSECK-"], "hex", 32, 32, suffix="-X")
P("flutterwave-encryption-key", "Flutterwave encryption key", ["FLWSECK_TEST", "FLWSECK"], "hex", 12, 12)
P("adyen-api-key", "Adyen API key", "AQE", "b64url", 60, 200, entropy=4.0)
P("plaid-access-token", "Plaid access token", ["access-sandbox-", "access-development-", "access-production-"], "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
P("lob-pub-api-key", "Lob publishable key", ["live_pub_", "test_pub_"], "hex", 31)
P("wise-api-token-named", "Wise API token (named)", "wise_api_token=", "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
P("braintree-tokenization-key", "Braintree tokenization key", ["production_", "sandbox_"], "lower", 8, 8, suffix="_{lower}16")
# ---------------------------------------------------------------- monitoring and analytics
P("new-relic-browser-token", "New Relic browser API token", "NRJS-", "hex", 19)
P("new-relic-rest-key", "New Relic REST API key", "NRRA-", "hex", 42)
P("new-relic-license-key-eu", "New Relic EU license key", "eu01xx", "hex", 34)
P("honeycomb-ingest-key", "Honeycomb ingest key", ["hcaik_", "hcxik_"], "lower", 58, 64)
P("launchdarkly-api-key", "LaunchDarkly API/SDK key", ["api-", "sdk-"], "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
P("posthog-personal-key", "PostHog personal API key", "phx_", "alnum", 43, 47)
P("logzio-token-named", "Logz.io token (named)", "logzio_token=", "letters", 32)
P("dynatrace-platform-token", "Dynatrace platform token", "dt0s16.", "upper", 24, 24, suffix=".{upper}64")
P("dynatrace-oauth-token", "Dynatrace OAuth client secret", "dt0s02.", "upper", 24, 24, suffix=".{upper}64")
P("axiom-token", "Axiom API/personal token", ["xaat-", "xapt-"], "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
P("rollbar-token-named", "Rollbar access token (named)", "rollbar_access_token=", "hex", 32)
P("bugsnag-key-named", "Bugsnag API key (named)", "bugsnag_api_key=", "hex", 32)
P("pagerduty-token-named", "PagerDuty API token (named)", "pagerduty_token=", "b64url", 20)
P("opsgenie-key-named", "Opsgenie API key (named)", "opsgenie_api_key=", "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
P("segment-write-key-named", "Segment write key (named)", "segment_write_key=", "alnum", 32)
P("mixpanel-secret-named", "Mixpanel API secret (named)", "mixpanel_api_secret=", "hex", 32)
P("amplitude-secret-named", "Amplitude secret key (named)", "amplitude_secret_key=", "hex", 32)
# ---------------------------------------------------------------- AI and ML
P("openrouter-api-key", "OpenRouter API key", "sk-or-v1-", "hex", 64)
P("groq-api-key", "Groq API key", "gsk_", "alnum", 52)
P("xai-api-key", "xAI API key", "xai-", "alnum", 80)
P("replicate-api-token", "Replicate API token", "r8_", "alnum", 37)
P("perplexity-api-key", "Perplexity API key", "pplx-", "alnum", 48)
P("huggingface-org-token", "Hugging Face organization API token", "api_org_", "letters", 34)
P("pinecone-api-key", "Pinecone API key", "pcsk_", "alnum", 5, 5, suffix="_{alnum}63")
P("langsmith-api-key", "LangSmith API key", ["lsv2_pt_", "lsv2_sk_"], "hex", 32, 32, suffix="_{hex}10")
P("nvidia-api-key", "NVIDIA API catalog key", "nvapi-", "b64url", 64)
P("cerebras-api-key", "Cerebras API key", "csk-", "lower", 48)
P("fireworks-api-key", "Fireworks AI API key", "fw_", "alnum", 24, 24, entropy=3.5)
P("elevenlabs-api-key", "ElevenLabs API key", "sk_", "hex", 48, 48)
P("stability-api-key", "Stability AI key (named)", "stability_key=", "alnum", 48)
P("openai-legacy-key", "OpenAI legacy key", "sk-", "alnum", 48, 48, entropy=4.0)
P("deepseek-api-key", "DeepSeek API key (named)", "deepseek_api_key=", "hex", 32, 32, entropy=3.0)
P("assemblyai-key-named", "AssemblyAI API key (named)", "assemblyai_api_key=", "hex", 32)
P("wandb-api-key-named", "Weights & Biases API key (named)", "wandb_api_key=", "hex", 40)
P("langfuse-secret-key", "Langfuse secret key", "sk-lf-", "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
P("modal-token-secret", "Modal token secret", "as-", "alnum", 22, 22, entropy=3.8)
P("roboflow-key-named", "Roboflow API key (named)", "roboflow_api_key=", "alnum", 20)
# ---------------------------------------------------------------- identity, secrets managers, crypto
P("onepassword-secret-key", "1Password account secret key", "A3-", "upper", 6, 6, suffix="-{upper}11-{upper}5-{upper}5-{upper}5")
P("onepassword-connect-token", "1Password Connect token (named)", "op_connect_token=", "b64url", 100, 600)
P("auth0-client-secret-named", "Auth0 client secret (named)", "auth0_client_secret=", "b64url", 64)
P("stytch-secret-named", "Stytch secret (named)", "stytch_secret=", "b64url", 36)
P("okta-ssws-header", "Okta SSWS authorization header", "SSWS ", "b64url", 42, 42)
P("duo-secret-key-named", "Duo integration secret key (named)", "duo_secret_key=", "alnum", 40)
P("jumpcloud-key-named", "JumpCloud API key (named)", "jumpcloud_api_key=", "hex", 40)
P("authress-key", "Authress service client access key", ["sc_", "authress_"], "lower", 5, 30, suffix=".{lower}5.acc_{lower}20.{b64url}60", entropy=3.0)
P("maxmind-license-key", "MaxMind license key", "", "alnum", 6, 6, suffix="_{alnum}29_mmk")
P("defined-networking-token", "Defined Networking API token", "dnkey-", "b64url", 26, 26, suffix="-{b64url}52")
P("intra42-client-secret", "42 Intra client secret", ["s-s4t2ud-", "s-s4t2af-"], "hex", 64)
P("ethereum-private-key-named", "Ethereum private key (named)", "private_key=0x", "hex", 64)
P("etherscan-key-named", "Etherscan API key (named)", "etherscan_api_key=", "upper", 34)
P("infura-secret-named", "Infura API key (named)", "infura_project_secret=", "hex", 32)
P("alchemy-key-named", "Alchemy API key (named)", "alchemy_api_key=", "b64url", 32)
P("binance-secret-named", "Binance API secret (named)", "binance_api_secret=", "alnum", 64)
P("shodan-key-named", "Shodan API key (named)", "shodan_api_key=", "alnum", 32)
P("virustotal-key-named", "VirusTotal API key (named)", "virustotal_api_key=", "hex", 64)
P("abuseipdb-key-named", "AbuseIPDB API key (named)", "abuseipdb_api_key=", "hex", 80)
P("hunter-key-named", "Hunter.io API key (named)", "hunter_api_key=", "hex", 40)
P("ipinfo-token-named", "ipinfo token (named)", "ipinfo_token=", "hex", 14)
P("censys-secret-named", "Censys API secret (named)", "censys_api_secret=", "alnum", 32)
P("openweather-key-named", "OpenWeather API key (named)", "openweather_api_key=", "hex", 32)
P("ably-api-key", "Ably API key", "ably_key=", "b64url", 6, 6, suffix=".{b64url}6:{b64url}43")
P("typesense-key-named", "Typesense API key (named)", "typesense_api_key=", "alnum", 32)
P("meilisearch-key-named", "Meilisearch master key (named)", "meili_master_key=", "b64url", 32, 64)
P("lokalise-token-named", "Lokalise API token (named)", "lokalise_api_token=", "hex", 40)
P("crowdin-token-named", "Crowdin personal token (named)", "crowdin_personal_token=", "hex", 80)
P("resend-api-key", "Resend API key", "re_", "b64url", 8, 8, suffix="_{alnum}24", entropy=3.5)
P("loops-key-named", "Loops API key (named)", "loops_api_key=", "hex", 32)
P("trigger-dev-key", "Trigger.dev secret key", ["tr_dev_", "tr_prod_", "tr_stg_"], "alnum", 20, 40)
P("inngest-signing-key", "Inngest signing key", ["signkey-prod-", "signkey-test-"], "hex", 64)
P("tailscale-key", "Tailscale auth/API key", ["tskey-auth-", "tskey-api-", "tskey-client-"], "alnum", 10, 20, suffix="-{alnum}30")
P("ngrok-authtoken-named", "ngrok authtoken (named)", "ngrok_authtoken=", "b64url", 40, 50)
P("cloudinary-url", "Cloudinary URL with secret", "cloudinary://", "digits", 15, 15, suffix=":{b64url}27@")
P("algolia-admin-key-named", "Algolia admin key (named)", "algolia_admin_key=", "hex", 32)
P("here-api-key-named", "HERE API key (named)", "here_api_key=", "b64url", 43)
P("tomtom-key-named", "TomTom API key (named)", "tomtom_api_key=", "alnum", 32)
P("twitch-oauth-token", "Twitch OAuth token", "oauth:", "lower", 30, 30, entropy=3.5)
P("spotify-secret-named", "Spotify client secret (named)", "spotify_client_secret=", "hex", 32)
P("reddit-secret-named", "Reddit client secret (named)", "reddit_client_secret=", "b64url", 27, 30)
P("youtube-oauth-secret", "Google OAuth client secret (legacy, named)", "client_secret=", "b64url", 24, 24, entropy=4.0)
P("zoom-secret-named", "Zoom client secret (named)", "zoom_client_secret=", "alnum", 32)
P("docusign-key-named", "DocuSign integration key (named)", "docusign_secret_key=", "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
P("calendly-token-named", "Calendly personal token (named)", "calendly_token=eyJ", "b64url", 100, 600)
P("typeform-token-named", "Typeform token (named)", "typeform_token=", "b64url", 44)
P("webflow-token-named", "Webflow API token (named)", "webflow_api_token=", "hex", 64)
P("storyblok-token-named", "Storyblok token (named)", "storyblok_token=", "alnum", 22, 28)
P("sentry-auth-token-named", "Sentry auth token (legacy, named)", "sentry_auth_token=", "hex", 64)
P("codacy-token-named", "Codacy API token (named)", "codacy_api_token=", "alnum", 20)
P("coveralls-token-named", "Coveralls repo token (named)", "coveralls_repo_token=", "alnum", 32, 37)
P("percy-token-named", "Percy token (named)", "percy_token=", "hex", 64)
P("browserstack-key-named", "BrowserStack access key (named)", "browserstack_access_key=", "alnum", 20)
P("saucelabs-key-named", "Sauce Labs access key (named)", "sauce_access_key=", "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
P("cypress-record-key-named", "Cypress record key (named)", "cypress_record_key=", "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
P("jenkins-token-named", "Jenkins API token (named)", "jenkins_api_token=", "hex", 34)
P("travis-token-named", "Travis CI token (named)", "travis_token=", "b64url", 22)
P("droneci-token-named", "Drone CI token (named)", "drone_token=", "alnum", 32)
P("quay-token-named", "Quay robot token (named)", "quay_token=", "upper", 64)
P("nomad-token-named", "Nomad ACL token (named)", "nomad_token=", "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
P("consul-token-named", "Consul ACL token (named)", "consul_http_token=", "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")
P("railway-api-token-named", "Railway API token (named)", "railway_api_token=", "hex", 8, 8, suffix="-{hex}4-{hex}4-{hex}4-{hex}12")

# ---------------------------------------------------------------- by provider name on the line
# (names are lowercase keywords; the value must follow within the line)
C("adafruit-api-key", "Adafruit IO key", "adafruit", "b64url", 32)
C("adobe-client-id", "Adobe OAuth client id", "adobe", "hex", 32)
P("adobe-client-secret", "Adobe client secret", "p8e-", "alnum", 32)
C("airtable-api-key", "Airtable legacy API key", "airtable", "alnum", 17)
C("asana-client-secret", "Asana client secret", "asana", "lower", 32)
C("beamer-token-ctx", "Beamer API key (by name)", "beamer", "b64url", 44, 44, prefix="b_")
C("bitbucket-client-secret", "Bitbucket OAuth secret", "bitbucket", "b64url", 64)
C("bittrex-key", "Bittrex access/secret key", "bittrex", "lower", 32)
C("cisco-meraki-api-key", "Cisco Meraki API key", "meraki", "hex", 40)
C("codecov-access-token", "Codecov access token", "codecov", "lower", 32)
C("cohere-api-key", "Cohere API key", ["cohere", "co_api_key"], "alnum", 40)
C("coinbase-access-token", "Coinbase access token", "coinbase", "b64url", 64)
C("confluent-secret", "Confluent Cloud API secret", "confluent", "alnum", 64)
C("contentful-delivery-token", "Contentful delivery token", "contentful", "b64url", 43)
C("datadog-access-token", "Datadog access token", "datadog", "lower", 40)
C("discord-client-secret", "Discord client secret", "discord", "b64url", 32)
C("discord-api-token", "Discord API key (hex)", "discord", "hex", 64)
C("droneci-access-token", "Drone CI access token", "droneci", "lower", 32)
C("dropbox-api-token", "Dropbox API secret", "dropbox", "lower", 15)
C("dropbox-short-lived-token", "Dropbox short-lived token", "dropbox", "b64url", 135, 160, prefix="sl.")
C("dropbox-long-lived-token", "Dropbox long-lived token", "dropbox", "lower", 11, 11, prefix="")
C("etsy-access-token", "Etsy access token", "etsy", "lower", 24)
C("facebook-app-secret", "Facebook app secret", ["facebook", "fb_app_secret", "fb_secret"], "hex", 32)
C("fastly-api-token", "Fastly API token", "fastly", "b64url", 32)
C("finicity-client-secret", "Finicity client secret", "finicity", "lower", 20)
C("finicity-api-token", "Finicity API token", "finicity", "hex", 32)
C("finnhub-access-token", "Finnhub token", "finnhub", "lower", 20)
C("flickr-access-token", "Flickr access token", "flickr", "lower", 32)
C("freshbooks-access-token", "Freshbooks access token", "freshbooks", "lower", 64)
C("freshdesk-api-key", "Freshdesk API key", "freshdesk", "alnum", 20)
C("github-client-secret", "GitHub OAuth app client secret", ["github_client_secret", "github-client-secret", "githubclientsecret"], "hex", 40)
C("gitter-access-token", "Gitter access token", "gitter", "b64url", 40)
C("hubspot-api-key", "HubSpot legacy API key", "hubspot", "hex", 8, 8, prefix="")
C("intercom-api-key", "Intercom access token", "intercom", "b64url", 60)
C("jfrog-api-key", "JFrog API key", ["jfrog", "artifactory", "bintray"], "lower", 73)
C("jfrog-identity-token", "JFrog identity token", ["jfrog", "artifactory", "bintray"], "lower", 64)
C("kraken-access-token", "Kraken API secret", "kraken", "b64", 80, 90)
C("kucoin-access-token", "KuCoin API key", "kucoin", "hex", 24)
C("launchdarkly-access-token", "LaunchDarkly access token", "launchdarkly", "b64url", 40)
C("linear-client-secret", "Linear OAuth client secret", ["linear_client_secret", "linear-client-secret"], "hex", 32)
C("linkedin-client-secret", "LinkedIn client secret", ["linkedin", "linked_in", "linked-in"], "lower", 16)
C("mattermost-access-token", "Mattermost access token", "mattermost", "lower", 26)
C("messagebird-api-token", "MessageBird API key", ["messagebird", "message_bird", "message-bird"], "lower", 25)
C("netlify-access-token", "Netlify access token (legacy)", "netlify", "b64url", 40, 46)
C("new-relic-user-api-id", "New Relic user API id", ["newrelic", "new_relic", "new-relic"], "lower", 64)
C("nytimes-access-token", "New York Times API key", ["nytimes", "newyorktimes"], "b64url", 32)
C("plaid-secret-key", "Plaid secret", "plaid", "lower", 30)
C("plaid-client-id", "Plaid client id", "plaid", "lower", 24)
C("privateai-api-token", "Private AI API key", ["privateai", "private_ai", "private-ai"], "lower", 32)
C("rapidapi-access-token", "RapidAPI key", "rapidapi", "b64url", 50)
C("sendbird-access-token", "Sendbird API token", "sendbird", "hex", 40)
C("sentry-access-token", "Sentry auth token (legacy)", "sentry", "hex", 64)
C("sidekiq-secret", "Sidekiq Enterprise credentials", ["bundle_enterprise__contribsys__com", "bundle_gems__contribsys__com"], "hex", 8, 8)
C("sumologic-access-token", "Sumo Logic access key", ["sumo_access", "sumologic", "sumo-access"], "alnum", 64)
C("travisci-access-token", "Travis CI token", "travis", "lower", 22)
C("twitch-api-token", "Twitch API token", "twitch", "lower", 30)
C("twitter-api-key", "Twitter/X API key", ["twitter", "tweet"], "alnum", 25)
C("twitter-api-secret", "Twitter/X API secret", ["twitter", "tweet"], "alnum", 50)
C("twitter-access-secret", "Twitter/X access secret", ["twitter", "tweet"], "alnum", 45)
C("twitter-access-token", "Twitter/X access token", ["twitter", "tweet"], "alnum", 20, 40, prefix="")
C("yandex-api-key", "Yandex API key", "yandex", "b64url", 35, 38, prefix="AQVN")
C("yandex-aws-access-token", "Yandex Cloud static key", "yandex", "b64url", 38, 38, prefix="YC")
C("zendesk-secret-key", "Zendesk API token", "zendesk", "lower", 40)
C("snyk-api-token", "Snyk API token", "snyk", "hex", 8, 8, prefix="")
C("sonar-api-token", "SonarQube legacy token", ["sonar_token", "sonar.login", "sonar_login", "sonar-token"], "lower", 40)
C("squarespace-access-token", "Squarespace API key", "squarespace", "hex", 8, 8, prefix="")
C("mailgun-signing-key", "Mailgun webhook signing key", "mailgun", "hex", 32, 32, prefix="")
C("mapbox-api-token", "Mapbox public token", "mapbox", "lower", 60, 60, prefix="pk.")
C("azure-openai-key", "Azure OpenAI key", ["azure_openai", "azure-openai", "azureopenai", "aoai"], "hex", 32)
C("azure-search-key", "Azure AI Search admin key", ["azure_search", "azuresearch", "search.windows.net"], "alnum", 52)
C("azure-devops-pat", "Azure DevOps personal access token", ["azure_devops", "azuredevops", "ado_pat", "dev.azure.com", "visualstudio.com"], "b32l", 52)
C("azure-batch-key", "Azure Batch account key", ["azure_batch", "batch.azure.com"], "b64", 86, 86)
C("azure-apim-subscription-key", "Azure API Management subscription key", ["ocp-apim-subscription-key", "apim"], "hex", 32)
C("mistral-api-key", "Mistral AI API key", "mistral", "alnum", 32)
C("together-api-key", "Together AI API key", ["together_api_key", "together-api-key", "togetherai"], "hex", 64)
C("deepgram-api-key", "Deepgram API key", "deepgram", "hex", 40)
C("elevenlabs-key-ctx", "ElevenLabs API key (by name)", ["elevenlabs", "eleven_labs", "xi-api-key"], "hex", 32)
C("assemblyai-api-key", "AssemblyAI API key", "assemblyai", "hex", 32)
C("clarifai-pat", "Clarifai personal access token", "clarifai", "hex", 32)
C("wandb-api-key", "Weights & Biases API key", ["wandb", "weights_and_biases"], "hex", 40)
C("deepseek-key-ctx", "DeepSeek API key (by name)", "deepseek", "hex", 32, 32, prefix="sk-")
C("linode-api-token", "Linode API token", "linode", "hex", 64)
C("vultr-api-key", "Vultr API key", "vultr", "upper", 36)
C("hetzner-api-token", "Hetzner Cloud token", ["hetzner", "hcloud"], "alnum", 64)
C("scaleway-secret-key", "Scaleway secret key", ["scaleway", "scw_secret"], "hex", 8, 8, prefix="")
C("ovh-application-secret", "OVH application secret", "ovh", "alnum", 32)
C("ibm-cloud-api-key", "IBM Cloud IAM API key", ["ibm_cloud", "ibmcloud", "ibm-cloud", "bluemix"], "b64url", 44)
C("oracle-cloud-key", "Oracle Cloud auth token", ["oci_", "oracle_cloud"], "b64url", 20, 20)
C("tencent-secret-key", "Tencent Cloud SecretKey", ["tencent", "qcloud"], "alnum", 32)
C("huawei-secret-key", "Huawei Cloud secret access key", ["huawei", "huaweicloud"], "alnum", 40)
C("baidu-secret-key", "Baidu Cloud secret key", ["baidu", "bce_"], "lower", 32)
C("kakao-rest-key", "Kakao REST API key", "kakao", "hex", 32)
C("line-channel-secret", "LINE channel secret", ["line_channel", "linebot", "line-channel"], "hex", 32)
C("postmark-server-token", "Postmark server token", "postmark", "hex", 8, 8, prefix="")
C("sparkpost-api-key", "SparkPost API key", "sparkpost", "hex", 40)
C("mailjet-secret", "Mailjet API secret", "mailjet", "hex", 32)
C("nexmo-api-secret", "Vonage/Nexmo API secret", ["nexmo", "vonage"], "alnum", 16)
C("plivo-auth-token", "Plivo auth token", "plivo", "alnum", 40)
C("sinch-api-secret", "Sinch API secret", "sinch", "alnum", 30, 40)
C("pusher-app-secret", "Pusher app secret", "pusher", "hex", 20)
C("agora-app-certificate", "Agora app certificate", "agora", "hex", 32)
C("stream-api-secret", "Stream (getstream.io) secret", ["getstream", "stream_api_secret", "stream_secret"], "lower", 64)
C("ringcentral-secret", "RingCentral client secret", "ringcentral", "b64url", 22)
C("webex-token", "Webex access token", "webex", "b64url", 64)
C("pipedrive-api-token", "Pipedrive API token", "pipedrive", "hex", 40)
C("zoho-client-secret", "Zoho client secret", "zoho", "hex", 42)
C("salesforce-consumer-secret", "Salesforce consumer secret", "salesforce", "HEX", 64)
C("freshservice-api-key", "Freshservice API key", "freshservice", "alnum", 20)
C("trello-api-token", "Trello token", "trello", "b64url", 64, 76)
C("monday-api-token", "monday.com API token", "monday", "b64url", 100, 300, prefix="eyJ")
C("todoist-api-token", "Todoist API token", "todoist", "hex", 40)
C("smartsheet-api-token", "Smartsheet access token", "smartsheet", "alnum", 26, 37)
C("miro-access-token", "Miro access token", ["miro_token", "miro_access", "miro-token"], "b64url", 27, 40)
C("dropbox-sign-api-key", "Dropbox Sign (HelloSign) API key", ["hellosign", "dropbox_sign"], "hex", 64)
C("docusign-secret", "DocuSign secret key", "docusign", "hex", 8, 8, prefix="")
C("box-client-secret", "Box client secret", ["box_client_secret", "box-client-secret", "boxclientsecret"], "alnum", 32)
C("spotify-client-secret", "Spotify client secret", "spotify", "hex", 32)
C("reddit-client-secret", "Reddit client secret", "reddit", "b64url", 27, 30)
C("zoom-client-secret", "Zoom client secret", ["zoom_client", "zoom_secret", "zoom-client", "zoom_api", "zoom_sdk"], "alnum", 32)
C("auth0-client-secret", "Auth0 client secret", "auth0", "b64url", 64)
C("onelogin-client-secret", "OneLogin client secret", "onelogin", "hex", 64)
C("duo-secret-key", "Duo secret key", ["duo_skey", "duo_secret", "duo-secret", "duo_ikey"], "alnum", 40)
C("jumpcloud-api-key", "JumpCloud API key", "jumpcloud", "hex", 40)
C("okta-client-secret", "Okta client secret", "okta", "b64url", 40, 64)
C("rollbar-access-token", "Rollbar access token", "rollbar", "hex", 32)
C("bugsnag-api-key", "Bugsnag API key", "bugsnag", "hex", 32)
C("honeycomb-api-key", "Honeycomb API key (legacy)", "honeycomb", "alnum", 22, 32)
C("loggly-token", "Loggly customer token", "loggly", "hex", 8, 8, prefix="")
C("logzio-token", "Logz.io token", "logz", "letters", 32)
C("papertrail-token", "Papertrail API token", "papertrail", "alnum", 20)
C("pagerduty-api-key", "PagerDuty API key", "pagerduty", "b64url", 20)
C("opsgenie-api-key", "Opsgenie API key", "opsgenie", "hex", 8, 8, prefix="")
C("statuspage-api-key", "Statuspage API key", "statuspage", "hex", 8, 8, prefix="")
C("splunk-hec-token", "Splunk HEC token", "splunk", "hex", 8, 8, prefix="")
C("segment-write-key", "Segment write key", ["segment_write", "segment-write", "segment_key", "analytics_write_key"], "alnum", 32)
C("mixpanel-api-secret", "Mixpanel API secret", "mixpanel", "hex", 32)
C("amplitude-api-key", "Amplitude API/secret key", ["amplitude_api", "amplitude_secret", "amplitude-api", "amplitude_key"], "hex", 32)
C("optimizely-token", "Optimizely personal token", "optimizely", "b64url", 54)
C("mongodb-atlas-private-key", "MongoDB Atlas API private key", ["mongodb_atlas", "atlas_private_key", "mongodbatlas"], "hex", 8, 8, prefix="")
C("redis-cloud-secret", "Redis Cloud API secret", ["redislabs", "redis_cloud", "rediscloud"], "alnum", 50, 60)
C("snowflake-password", "Snowflake key/password by name", ["snowflake_password", "snowflake_token", "snowflake_pat", "snowflake-password"], "b64url", 40, 400)
C("elastic-api-key", "Elasticsearch API key (encoded)", ["elastic_api_key", "elasticsearch_api_key", "es_api_key", "elastic-api-key"], "b64", 60, 100)
C("algolia-search-key", "Algolia key (any)", "algolia", "lower", 32)
C("shopify-api-secret", "Shopify API secret", "shopify", "hex", 32)
C("razorpay-key-secret", "Razorpay key secret", "razorpay", "alnum", 24)
C("mollie-key-ctx", "Mollie key by name", "mollie", "alnum", 30, 30, prefix="test_")
C("wise-api-token", "Wise API token", ["wise_", "transferwise"], "hex", 8, 8, prefix="")
C("binance-api-secret", "Binance API secret", "binance", "alnum", 64)
C("bitfinex-api-secret", "Bitfinex API secret", "bitfinex", "alnum", 43)
C("gemini-exchange-secret", "Gemini exchange API secret", ["gemini_api_secret", "gemini-api-secret"], "alnum", 27, 28)
C("etherscan-api-key", "Etherscan API key", ["etherscan", "bscscan", "polygonscan"], "upper", 34)
C("infura-api-key", "Infura project secret", "infura", "hex", 32)
C("alchemy-api-key", "Alchemy API key", ["alchemy_api", "alchemy_key", "alchemy-api"], "b64url", 32)
C("moralis-api-key", "Moralis API key", "moralis", "alnum", 64)
C("shodan-api-key", "Shodan API key", "shodan", "alnum", 32)
C("censys-api-secret", "Censys API secret", "censys", "alnum", 32)
C("virustotal-api-key", "VirusTotal API key", "virustotal", "hex", 64)
C("urlscan-api-key", "urlscan.io API key", "urlscan", "hex", 8, 8, prefix="")
C("securitytrails-api-key", "SecurityTrails API key", "securitytrails", "alnum", 32)
C("abuseipdb-api-key", "AbuseIPDB API key", "abuseipdb", "hex", 80)
C("hunter-api-key", "Hunter.io API key", ["hunter_api", "hunter.io", "hunterio"], "hex", 40)
C("clearbit-api-key", "Clearbit secret key", "clearbit", "hex", 32, 32, prefix="sk_")
C("ipinfo-token", "ipinfo.io token", "ipinfo", "hex", 14)
C("openweather-api-key", "OpenWeather API key", ["openweather", "owm_"], "hex", 32)
C("tomtom-api-key", "TomTom API key", "tomtom", "alnum", 32)
C("here-api-key", "HERE API key", ["here_api", "here-api", "hereapi"], "b64url", 43)
C("gitguardian-api-key", "GitGuardian API key", "gitguardian", "alnum", 40, 48)
C("jenkins-api-token", "Jenkins API token", "jenkins", "hex", 32, 34)
C("quay-robot-token", "Quay robot token", "quay", "upper", 64)
C("browserstack-access-key", "BrowserStack access key", "browserstack", "alnum", 20)
C("saucelabs-access-key", "Sauce Labs access key", ["saucelabs", "sauce_"], "hex", 8, 8, prefix="")
C("lambdatest-access-key", "LambdaTest access key", "lambdatest", "alnum", 50)
C("percy-token", "Percy token", "percy", "hex", 64)
C("codacy-api-token", "Codacy API token", "codacy", "alnum", 20)
C("coveralls-repo-token", "Coveralls token", "coveralls", "alnum", 32, 37)
C("cypress-record-key", "Cypress record key", "cypress", "hex", 8, 8, prefix="")
C("vercel-legacy-token", "Vercel token (legacy)", ["vercel", "zeit"], "alnum", 24)
C("railway-api-token", "Railway API token", "railway", "hex", 8, 8, prefix="")
C("heroku-oauth-token", "Heroku OAuth token", "heroku", "hex", 64)
C("consul-acl-token", "Consul ACL token", "consul", "hex", 8, 8, prefix="")
C("nomad-acl-token", "Nomad ACL token", "nomad", "hex", 8, 8, prefix="")
C("webflow-api-token", "Webflow API token", "webflow", "hex", 64)
C("storyblok-token", "Storyblok token", "storyblok", "alnum", 22, 28)
C("sanity-token-ctx", "Sanity token by name", "sanity", "alnum", 78, 200, prefix="sk")
C("lokalise-api-token", "Lokalise API token", "lokalise", "hex", 40)
C("crowdin-token", "Crowdin token", "crowdin", "hex", 80)
C("typesense-api-key", "Typesense API key", "typesense", "alnum", 32)
C("meilisearch-master-key", "Meilisearch master key", "meili", "b64url", 32, 64)
C("ngrok-token", "ngrok authtoken", "ngrok", "b64url", 40, 50)
C("tailscale-api-key-ctx", "Tailscale key by name", "tailscale", "alnum", 10, 20, prefix="tskey-")
C("pusher-beams-key", "Pusher Beams secret key", "beams", "HEX", 64)
C("unity-license-secret", "Unity serial/credentials", ["unity_password", "unity_serial"], "upper", 24, 30)
C("apple-app-specific-password", "Apple app-specific password", ["apple_id_password", "app_specific_password", "fastlane_apple_application_specific_password"], "letters", 4, 4)
C("expo-access-token", "Expo access token", ["expo_token", "expo-token", "expo_access"], "b64url", 40)
C("codemagic-token", "Codemagic API token", "codemagic", "b64url", 43)
C("bitrise-token", "Bitrise personal token", "bitrise", "b64url", 86)
C("appcenter-token", "App Center API token", "appcenter", "hex", 40)

# ---------------------------------------------------------------- other shapes
R("aws-access-key-a3t", "AWS access key id (A3T prefix)",
  r'''(?:^|[^A-Za-z0-9])(A3T[A-Z0-9][A-Z2-7]{16})(?:[^A-Za-z0-9]|$)''', ["a3t"],
  "aws_access_key_id = @S@", "A3T{u:1}{V:16}", "ref = A3TX1234")
R("facebook-access-token-pair", "Facebook app access token (id|secret)",
  r'''(?i:facebook|fb_|graph)[^\n]{0,60}?(?:^|[^0-9])([0-9]{15,16}(?:\||%7C)[0-9a-zA-Z_\-]{27,40})(?:[^A-Za-z0-9_\-]|$)''', ["facebook", "fb_", "graph"],
  "graph_token: @S@", "{D:16}|{b:32}", "id|name|email")
R("sentry-dsn", "Sentry DSN with its secret",
  r'''https://([0-9a-f]{32})(?::[0-9a-f]{32})?@[a-z0-9.\-]*sentry\.io/[0-9]+''', ["sentry.io/"],
  "SENTRY_DSN=https://@S@@o123456.ingest.sentry.io/4504", "{H:32}", "see https://sentry.io/welcome/")
R("url-password-other-schemes", "password in a database/broker URL of other schemes",
  r'''(?i)(?:neo4j(?:\+s|\+ssc)?|bolt|couchbase|couchbases|clickhouse|snowflake|sqlserver|mssql|oracle|db2|cockroachdb|nats|mqtts?|kafka|wss?|rtsp|svn|s3|influxdb|cassandra|memcached|elasticsearch|opensearch|arangodb|rethinkdb|jdbc:[a-z0-9]+)://[^\s:@/"'<>]+:([^\s@/"'<>]{3,})@[A-Za-z0-9][A-Za-z0-9.\-]*''',
  ["neo4j", "bolt://", "couchbase", "clickhouse://", "snowflake://", "sqlserver://", "mssql://", "oracle://", "db2://", "cockroachdb://", "nats://", "mqtt://", "mqtts://", "kafka://", "ws://", "wss://", "rtsp://", "svn://", "s3://", "influxdb://", "cassandra://", "memcached://", "elasticsearch://", "opensearch://", "arangodb://", "rethinkdb://", "jdbc:"],
  "uri = neo4j+s://neo4j:@S@@graph.internal:7687", "{P:16}", "uri = neo4j+s://graph.internal:7687")
R("jwt-unsigned", "unsigned JSON Web Token (alg none)",
  r'''(?:^|[^A-Za-z0-9_\-])(eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.)(?:[^A-Za-z0-9_\-.]|$)''', ["eyj"],
  "id_token=@S@ ", "eyJhbGciOiJub25lIn0.eyJ{b:40}.", "eyJhbGciOiJub25lIn0 alone")
R("basic-auth-in-curl", "credentials passed to curl -u / --user",
  r'''(?:^|[\s])(?:-u|--user)[ =]["']?[A-Za-z0-9_.@\-]{1,64}:([^\s"'@]{6,})["']?(?:\s|$)''', [" -u", "--user"],
  "curl -u deploy:@S@ https://ci.internal/job", "{P:16}", "curl -u $USER:$PASS https://ci.internal/job")
R("htpasswd-apr1", "htpasswd entry (MD5-crypt, SHA, bcrypt hash of a password)",
  r'''(?:^|\n)[A-Za-z0-9_.\-]{1,64}:(\$(?:apr1|2[aby]|1|5|6)\$[./A-Za-z0-9$]{20,})''', ["$apr1$", "$2y$", "$2a$", "$2b$", "$6$", "$5$"],
  "admin:@S@", "$apr1${A:8}${A:22}", "admin:x")
R("jdbc-password-param", "password parameter in a JDBC URL",
  r'''(?i)jdbc:[a-z0-9]+:[^\s"']*?[?;&](?:password|pwd)=([^&;\s"']{3,})''', ["jdbc:"],
  "url=jdbc:mysql://db:3306/app?user=app&password=@S@", "{A:16}", "url=jdbc:mysql://db:3306/app?user=app")
R("private-key-ssh2", "SSH2 (RFC 4716 / ssh.com) private key block",
  r'''(---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----(?:[^-]|-{1,3}[^-]){16,}?---- END SSH2 ENCRYPTED PRIVATE KEY ----)''', ["begin ssh2 encrypted private key"],
  "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\n@S@\n---- END SSH2 ENCRYPTED PRIVATE KEY ----", "{B:64}\n{B:64}", "---- BEGIN SSH2 PUBLIC KEY ----", window=65536)
R("wireguard-private-key", "WireGuard private key",
  r'''(?i)PrivateKey[ \t]*=[ \t]*([A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=)''', ["privatekey"],
  "[Interface]\nPrivateKey = @S@", "{B:42}A=", "[Interface]\nPrivateKey = <key>")
R("openvpn-static-key", "OpenVPN static key block",
  r'''(-----BEGIN OpenVPN Static key V1-----(?:[^-]|-{1,4}[^-]){16,}?-----END OpenVPN Static key V1-----)''', ["begin openvpn static key"],
  "-----BEGIN OpenVPN Static key V1-----\n@S@\n-----END OpenVPN Static key V1-----", "{H:32}\n{H:32}", "tls-auth ta.key 1", window=65536)
R("kubeconfig-client-key", "client key data in a kubeconfig",
  r'''client-key-data:[ \t]*([A-Za-z0-9+/]{60,}={0,2})''', ["client-key-data"],
  "    client-key-data: @S@", "LS0tLS1CRUdJTi{B:80}", "    client-key-data: ''")
R("netrc-password", "password in a .netrc / _netrc entry",
  r'''machine[ \t]+[^\s]+[ \t]+login[ \t]+[^\s]+[ \t]+password[ \t]+([^\s]{4,})''', ["machine"],
  "machine api.heroku.com login deploy password @S@", "{A:20}", "machine api.heroku.com login deploy")
R("pgpass-entry", "password in a .pgpass line",
  r'''(?m)^[A-Za-z0-9_.\-*]+:(?:[0-9]+|\*):[A-Za-z0-9_*\-]+:[A-Za-z0-9_*\-]+:([^\s:]{4,})$''', [":5432:", ":*:"],
  "db.internal:5432:app:app:@S@", "{A:18}", "db.internal:5432:app:app", path=".pgpass")
R("ldap-bind-password", "LDAP bind password (bindpw / bind_password)",
  r'''(?i)(?:bindpw|bind_pw|bind_password|bindpassword)[ \t]*[=:]?[ \t]+["']?([^\s"']{4,})''', ["bindpw", "bind_pw", "bind_password", "bindpassword"],
  "bindpw @S@", "{P:14}", "bindpw")
R("snmp-community", "SNMP community string",
  r'''(?i)(?:snmp-server[ \t]+community|rocommunity|rwcommunity)[ \t]+([^\s]{8,})''', ["community"],
  "snmp-server community @S@ RO", "{A:16}", "snmp-server community public RO")
R("ansible-vault", "Ansible Vault encrypted block",
  r'''(\$ANSIBLE_VAULT;1\.[12];AES256(?:;[A-Za-z0-9_]+)?\r?\n(?:[ \t]*[0-9a-f]{20,}\r?\n?)+)''', ["$ansible_vault;"],
  "secret: !vault |\n  @S@", "$ANSIBLE_VAULT;1.1;AES256\n  {H:80}\n  {H:80}", "$ANSIBLE_VAULT", window=65536)

R("azure-container-registry-password", "Azure Container Registry password (+ACR)",
  r'''(?:^|[^A-Za-z0-9+/])([A-Za-z0-9+/]{42}\+ACR[A-Za-z0-9]{6})(?:[^A-Za-z0-9+/=]|$)''', ["+acr"],
  "ACR_PASSWORD=@S@", "{A:42}+ACR{A:6}", "ACR_LOGIN_SERVER=demo.azurecr.io")
R("azure-function-key", "Azure Functions key in a function URL",
  r'''azurewebsites\.net/api/[^\s?"']+\?(?:[^\s"'#]*&)?code=([A-Za-z0-9_\-]{40,60}={0,2})''', ["azurewebsites.net/api/"],
  "curl https://fn-demo.azurewebsites.net/api/hook?code=@S@", "{b:54}==", "curl https://fn-demo.azurewebsites.net/api/hook")
R("azure-app-config-secret", "Azure App Configuration connection string secret",
  r'''azconfig\.io;Id=[^;\s]+;Secret=([A-Za-z0-9+/]{40,60}={0,2})''', ["azconfig.io;id="],
  "AppConfig=Endpoint=https://demo.azconfig.io;Id=ab12-cd-s0:XyZ;Secret=@S@", "{B:43}=", "AppConfig=Endpoint=https://demo.azconfig.io")
R("azure-signalr-access-key", "Azure SignalR / Web PubSub access key",
  r'''(?:signalr|webpubsub)\.(?:net|azure\.com)[^;\s]*;AccessKey=([A-Za-z0-9+/]{40,60}={0,2})''', ["signalr.net", "webpubsub.azure.com"],
  "Endpoint=https://demo.service.signalr.net;AccessKey=@S@;Version=1.0;", "{B:43}=", "Endpoint=https://demo.service.signalr.net;Version=1.0;")
R("azure-eventgrid-key", "Azure Event Grid access key header",
  r'''(?i)aeg-sas-key["']?[ \t]*[:=][ \t]*["']?([A-Za-z0-9+/]{43}=)''', ["aeg-sas-key"],
  "aeg-sas-key: @S@", "{B:43}=", "aeg-sas-key: $KEY")
R("google-fcm-server-key", "Firebase Cloud Messaging legacy server key",
  r'''(AAAA[A-Za-z0-9_\-]{7}:APA91b[A-Za-z0-9_\-]{134})''', [":apa91b"],
  "FCM_SERVER_KEY=@S@", "AAAA{b:7}:APA91b{b:134}", "FCM_SERVER_KEY=AAAA:APA91b")
R("airtable-pat", "Airtable personal access token",
  r'''(?:^|[^A-Za-z0-9_])(pat[A-Za-z0-9]{14}\.[a-f0-9]{64})(?:[^A-Za-z0-9_\-]|$)''', ["pat"],
  "AIRTABLE_TOKEN=@S@", "pat{A:14}.{H:64}", "path.join(dir, name)")
R("asana-pat", "Asana personal access token",
  r'''(?:^|[^0-9/])([0-9]/[0-9]{16}:[a-f0-9]{32})(?:[^A-Za-z0-9]|$)''', ["asana"],
  "ASANA_PAT=@S@", "1/{D:16}:{H:32}", "ASANA_WORKSPACE=1/12")
R("telnyx-api-key", "Telnyx API v2 key",
  r'''(?i:telnyx)[^\n]{0,60}?(KEY[0-9A-F]{32}_[A-Za-z0-9]{22})(?:[^A-Za-z0-9_]|$)''', ["telnyx"],
  "TELNYX_API_KEY=@S@", "KEY{X:32}_{A:22}", "TELNYX_API_KEY=KEY_")
R("mollie-api-key", "Mollie API key",
  r'''(?i:mollie)[^\n]{0,60}?((?:live|test)_[A-Za-z0-9]{30})(?:[^A-Za-z0-9_]|$)''', ["mollie"],
  "MOLLIE_API_KEY=@S@", "live_{A:30}", "MOLLIE_API_KEY=live_")
R("gocardless-api-token", "GoCardless access token",
  r'''(?i:gocardless)[^\n]{0,60}?((?:live|sandbox)_[A-Za-z0-9_\-=]{40})(?:[^A-Za-z0-9_\-=]|$)''', ["gocardless"],
  "GOCARDLESS_ACCESS_TOKEN=@S@", "live_{b:40}", "GOCARDLESS_ENV=live")
R("lob-api-key", "Lob API key",
  r'''(?i:lob_|lob-|lob\.)[^\n]{0,60}?((?:live|test)_[a-f0-9]{35})(?:[^A-Za-z0-9_]|$)''', ["lob_", "lob-", "lob."],
  "LOB_API_KEY=@S@", "live_{H:35}", "LOB_API_KEY=live_")


def regex_cls(cls):
    return CLS[cls][0]


def expand_suffix(sfx):
    """'_{hex}40' -> (regex, generator)."""
    rx, gen = "", ""
    for lit, cls, n in re.findall(r'([^{]*)(?:\{(\w+)\}(\d+))?', sfx):
        rx += re.escape(lit).replace("\\-", "\\-") if lit else ""
        gen += lit.replace("{", "{{")
        if cls:
            rx += "%s{%s}" % (regex_cls(cls), n)
            gen += "{%s:%s}" % (CLS[cls][1], n)
    return rx, gen


def body_chars(cls):
    return CLS[cls][0]


def toml_str(s):
    if "'''" in s:
        raise ValueError(s)
    return "'''" + s + "'''"


def rs(s):
    return json.dumps(s)


rules_toml = []
samples = []
ids = set()
existing = set(re.findall(r'^id = "([^"]+)"', open(os.path.join(ROOT, "redaction-rules/secrets.toml")).read(), re.M))

SYNTAX_CYCLE = [
    ("config/{slug}.env", "{NAME}=@S@"),
    ("src/{slug}.py", "{name} = \"@S@\""),
    ("config/{slug}.yaml", "{name}: @S@"),
    ("src/{slug}.js", "const {camel} = '@S@';"),
    ("config/{slug}.json", "{{\"{name}\": \"@S@\"}}"),
    ("notes/{slug}.md", "Use `@S@` for {name}."),
]


C_SYNTAX_CYCLE = [
    ("config/{slug}.env", "{NAME}=@S@"),
    ("src/{slug}.py", "{NAME} = \"@S@\""),
    ("config/{slug}.yaml", "{NAME}: @S@"),
    ("src/{slug}.js", "process.env.{NAME} ??= '@S@';"),
    ("config/{slug}.json", "{{\"{NAME}\": \"@S@\"}}"),
    ("notes/{slug}.md", "- {NAME}: `@S@`"),
]


def add(id, desc, regex, keywords, template, secret, negative, path, entropy=None, window=None):
    assert id not in ids and id not in existing, id
    ids.add(id)
    kw = sorted(set(k.lower() for k in keywords if k))
    lines = ["[[rules]]", "id = %s" % rs(id), "description = %s" % rs(desc), "regex = %s" % toml_str(regex),
             "keywords = [%s]" % ", ".join(rs(k) for k in kw)]
    if entropy:
        lines.append("entropy = %s" % entropy)
    if window:
        lines.append("window = %d" % window)
    rules_toml.append("\n".join(lines))
    samples.append((id, path, template, secret, negative))


for i, (id, desc, prefixes, cls, mn, mx, suffix, entropy) in enumerate(P_ENTRIES):
    if id == "sentry-dsn-secret":
        continue
    ch = body_chars(cls)
    srx, sgen = expand_suffix(suffix)
    pre = "(?:%s)" % "|".join(re.escape(p) for p in prefixes) if prefixes != [""] else ""
    rep = "{%d}" % mn if mn == mx else "{%d,%d}" % (mn, mx)
    secret_rx = "%s%s%s%s" % (pre, ch, rep, srx)
    named = "=" in prefixes[0] or prefixes[0].endswith(('"', ": ", " "))
    if named and "=" in prefixes[0]:
        word = prefixes[0].split("_")[0].lower()
        if any(word in n.lower() for c in C_ENTRIES for n in c[2]) or id == "ngrok-authtoken-named":
            continue
    allowed_trail = "A-Za-z0-9_\\-" + ("+/=" if cls == "b64" else "")
    lead = "" if named or not prefixes[0][:1].isalnum() else "(?:^|[^A-Za-z0-9_])"
    if prefixes == [""]:
        lead = "(?:^|[^A-Za-z0-9_])"
        kws = [suffix.split("_")[-1].replace("mmk", "_mmk")]
    else:
        kws = prefixes
    if named:
        regex = "(?i:%s)(%s%s%s)(?:[^%s]|$)" % ("|".join(re.escape(p) for p in prefixes), ch, rep, srx, allowed_trail)
    else:
        regex = "%s(%s)(?:[^%s]|$)" % (lead, secret_rx, allowed_trail)
    gen_body = "{%s:%d}" % (CLS[cls][1], mx if mx - mn < 8 else mn + (mx - mn) // 2)
    p0 = prefixes[0]
    if named:
        secret = gen_body + sgen
        slug = id
        template = "%s@S@" % p0
        path = "config/%s.env" % id
        negative = "%s%s" % (p0, "{short}")
    else:
        secret = p0.replace("{", "{{") + gen_body + sgen
        path_t, tpl = SYNTAX_CYCLE[i % len(SYNTAX_CYCLE)]
        name = id.replace("-", "_")
        camel = re.sub(r'_(\w)', lambda m: m.group(1).upper(), name)
        template = tpl.format(NAME=name.upper(), name=name, camel=camel, slug=id)
        path = path_t.format(slug=id)
        negative = None
    # Near miss: the prefix with a body a few characters short, under a neutral name.
    short_len = max(1, mn - 4)
    short = "".join("0123456789abcdef"[(k * 7 + 3) % 16] for k in range(short_len))
    if cls in ("upper", "HEX", "b32"):
        short = short.upper()
    if cls == "b32l":
        short = "".join("abcdefgh234567"[(k * 5 + 1) % 14] for k in range(short_len))
    if cls == "letters":
        short = "".join("qwertzuiopasdfgh"[(k * 7 + 3) % 16] for k in range(short_len))
    if cls == "digits":
        short = "".join("0123456789"[(k * 7 + 3) % 10] for k in range(short_len))
    if named:
        negative = "# %s is set in the vault" % p0.split("=")[0].rstrip("=:\" ")
    else:
        negative = "ref = \"%s%s\"" % (p0, short) if p0 else "ref = \"%s_mmk\"" % short
    add(id, desc, regex, kws, template, secret, negative, path, entropy)

for i, (id, desc, names, cls, mn, mx, prefix, entropy) in enumerate(C_ENTRIES):
    ch = body_chars(cls)
    rep = "{%d}" % mn if mn == mx else "{%d,%d}" % (mn, mx)
    uuid = cls == "hex" and mn == 8 and mx == 8 and prefix == ""
    if uuid:
        value_rx = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
        gen = "{H:8}-{H:4}-{H:4}-{H:4}-{H:12}"
    elif id == "dropbox-long-lived-token":
        value_rx = "[a-z0-9]{11}AAAAAAAAAA[A-Za-z0-9_\\-]{43}"
        gen = "{l:11}AAAAAAAAAA{b:43}"
    elif id == "twitter-access-token":
        value_rx = "[0-9]{15,25}-[A-Za-z0-9]{20,40}"
        gen = "{D:19}-{A:30}"
    elif id == "sidekiq-secret":
        value_rx = "[a-f0-9]{8}:[a-f0-9]{8}"
        gen = "{H:8}:{H:8}"
    elif id == "mailgun-signing-key":
        value_rx = "[a-h0-9]{32}-[a-h0-9]{8}-[a-h0-9]{8}"
        gen = "{H:32}-{H:8}-{H:8}"
    elif id == "mapbox-api-token":
        value_rx = "pk\\.[a-z0-9]{60}\\.[a-z0-9_\\-]{22}"
        gen = "pk.{l:60}.{l:22}"
    elif id == "apple-app-specific-password":
        value_rx = "[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}"
        gen = "{L:4}-{L:4}-{L:4}-{L:4}"
    else:
        value_rx = re.escape(prefix) + ch + rep + ("={0,2}" if cls == "b64" else "")
        gen = prefix + "{%s:%d}" % (CLS[cls][1], mx if mx - mn < 8 else mn + (mx - mn) // 2)
    variants = []
    for n in names:
        for v in (n,):
            if v not in variants and len(v) >= 3:
                variants.append(v)
    names = variants
    alt = "|".join(re.escape(n) for n in names)
    trail_cls = "A-Za-z0-9_\\-" + ("+/=" if cls == "b64" else "")
    regex = "(?i:%s)[^\\n]{0,60}?[ \\t\"'\\x60=:,>(\\[|](%s)(?:[^%s]|$)" % (alt, value_rx, trail_cls)
    if entropy is None:
        entropy = 3.0 if cls not in ("digits",) else None
        if cls in ("letters",) or mn < 12:
            entropy = 2.5
        if mn <= 24 and cls in ("hex", "HEX", "lower", "upper"):
            entropy = 2.5
    name = names[0].strip("_-. ").replace(".", "_").replace("-", "_")
    NAME = id.upper().replace("-", "_") if name in id.replace("-", "_") else (name.upper() + "_KEY")
    path_t, tpl = C_SYNTAX_CYCLE[i % len(C_SYNTAX_CYCLE)]
    lname = NAME.lower()
    camel = re.sub(r'_(\w)', lambda m: m.group(1).upper(), lname)
    template = tpl.format(NAME=NAME, name=lname, camel=camel, slug=id)
    path = path_t.format(slug=id)
    negative = "# %s: see the team vault for the current value" % names[0]
    add(id, desc, regex, names, template, gen, negative, path, entropy)

for (id, desc, regex, keywords, template, secret, negative, path, entropy, window) in R_ENTRIES:
    add(id, desc, regex, keywords, template, secret, negative, path, entropy, window)

header = '''# veilfs redaction rules: the provider catalog (part of the built-in `secrets` set).
# GENERATED by redaction-rules/catalog/providers.py from one line of facts per format; edit
# that file and re-run it. Every rule has a positive and a near-miss negative sample in
# src/redact/samples_providers.rs (tests/it/redact_rules.rs).
version = 1
name = "secrets-providers"
description = "Provider token formats: prefixed tokens, and tokens named after their provider"
'''
with open(os.path.join(ROOT, "redaction-rules/secrets-providers.toml"), "w") as f:
    f.write(header + "\n" + "\n\n".join(rules_toml) + "\n")

with open(os.path.join(ROOT, "src/redact/samples_providers.rs"), "w") as f:
    f.write("// GENERATED by redaction-rules/catalog/providers.py: one sample per provider-catalog rule.\n")
    f.write("pub(super) const PROVIDER_TABLE: &[Spec] = &[\n")
    for (id, path, template, secret, negative) in samples:
        f.write("    Spec { rule_id: %s, path: %s, template: %s, secret: %s, negative: %s },\n"
                % (rs(id), rs(path), rs(template), rs(secret), rs(negative)))
    f.write("];\n")
print(len(rules_toml), "provider rules")
