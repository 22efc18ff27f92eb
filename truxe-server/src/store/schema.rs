//! diesel table definitions, shared by SQLite and PostgreSQL (see migrations/).

diesel::table! {
    oauth_clients (client_id) {
        client_id -> Text,
        client_name -> Text,
        secret_hash -> Nullable<Text>,
        previous_secret_hash -> Nullable<Text>,
        previous_secret_expires_at -> Nullable<BigInt>,
        token_endpoint_auth_method -> Text,
        grant_types -> Text,
        allowed_scopes -> Text,
        require_pkce -> Bool,
        require_consent -> Bool,
        trusted -> Bool,
        client_uri -> Nullable<Text>,
        logo_uri -> Nullable<Text>,
        tos_uri -> Nullable<Text>,
        policy_uri -> Nullable<Text>,
        status -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        allowed_audiences -> Text,
        introspection_audiences -> Text,
        access_token_ttl -> Nullable<BigInt>,
        refresh_token_ttl -> Nullable<BigInt>,
        authorization_code_ttl -> Nullable<BigInt>,
    }
}

diesel::table! {
    oauth_client_redirect_uris (client_id, purpose, uri) {
        client_id -> Text,
        purpose -> Text,
        uri -> Text,
    }
}

diesel::table! {
    users (user_id) {
        user_id -> Text,
        email -> Text,
        display_name -> Nullable<Text>,
        email_verified -> Bool,
        status -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        mfa_secret -> Nullable<Text>,
        mfa_enabled -> Bool,
        mfa_last_step -> Nullable<BigInt>,
        mfa_failed_attempts -> Integer,
        mfa_locked_until -> Nullable<BigInt>,
        mfa_enrolled_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    sessions (session_hash) {
        session_hash -> Text,
        user_id -> Text,
        auth_time -> BigInt,
        amr -> Text,
        created_at -> BigInt,
        last_seen_at -> BigInt,
        expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        mfa_pending -> Bool,
    }
}

diesel::table! {
    oauth_consents (user_id, client_id) {
        user_id -> Text,
        client_id -> Text,
        scope -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    oauth_grants (grant_id) {
        grant_id -> Text,
        client_id -> Text,
        user_id -> Nullable<Text>,
        scope -> Text,
        auth_time -> Nullable<BigInt>,
        amr -> Nullable<Text>,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    oauth_authorization_codes (code_hash) {
        code_hash -> Text,
        client_id -> Text,
        user_id -> Text,
        redirect_uri -> Text,
        scope -> Text,
        code_challenge -> Nullable<Text>,
        code_challenge_method -> Nullable<Text>,
        nonce -> Nullable<Text>,
        auth_time -> BigInt,
        amr -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        consumed_at -> Nullable<BigInt>,
        grant_id -> Nullable<Text>,
        redirect_uri_given -> Bool,
    }
}

diesel::table! {
    oauth_tokens (jti) {
        jti -> Text,
        token_type -> Text,
        token_hash -> Nullable<Text>,
        grant_id -> Nullable<Text>,
        client_id -> Text,
        user_id -> Nullable<Text>,
        scope -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        rotated_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        replaced_by -> Nullable<Text>,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        algorithm -> Text,
        public_pem -> Text,
        created_at -> BigInt,
        retired_at -> Nullable<BigInt>,
        origin -> Text,
        private_key_sealed -> Nullable<Text>,
        activates_at -> BigInt,
        retires_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    audit_events (event_id) {
        event_id -> Text,
        occurred_at -> BigInt,
        action -> Text,
        actor -> Text,
        subject -> Nullable<Text>,
        client_id -> Nullable<Text>,
        user_id -> Nullable<Text>,
        ip -> Nullable<Text>,
        request_id -> Nullable<Text>,
        details -> Text,
        seq -> Nullable<BigInt>,
        user_agent -> Nullable<Text>,
        result -> Text,
        prev_hash -> Nullable<Text>,
        hash -> Nullable<Text>,
    }
}

diesel::table! {
    audit_chain (id) {
        id -> Integer,
        head_seq -> BigInt,
        head_hash -> Text,
        legacy_chained -> Bool,
    }
}

diesel::joinable!(oauth_client_redirect_uris -> oauth_clients (client_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(oauth_authorization_codes -> oauth_clients (client_id));
diesel::joinable!(oauth_tokens -> oauth_grants (grant_id));

diesel::allow_tables_to_appear_in_same_query!(
    oauth_clients,
    oauth_client_redirect_uris,
    users,
    sessions,
    oauth_consents,
    oauth_grants,
    oauth_authorization_codes,
    oauth_tokens,
    signing_keys,
    audit_events,
    audit_chain,
    server_secrets,
    mfa_recovery_codes,
    magic_links,
);

diesel::table! {
    server_secrets (name) {
        name -> Text,
        value -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    mfa_recovery_codes (user_id, code_hash) {
        user_id -> Text,
        code_hash -> Text,
        created_at -> BigInt,
        used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    magic_links (token_hash) {
        token_hash -> Text,
        email -> Text,
        user_id -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
        consumed_at -> Nullable<BigInt>,
        return_to -> Nullable<Text>,
        ip -> Nullable<Text>,
    }
}

diesel::joinable!(mfa_recovery_codes -> users (user_id));
