//! A scripted user agent for flows without a browser: keeps cookies, does not follow
//! redirects, and submits the HTML forms our pages render (hidden fields and the chosen button).

use reqwest::StatusCode;
use reqwest::header::LOCATION;

pub struct Agent {
    pub client: reqwest::Client,
    pub base: String,
}

pub struct Response {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
    pub url: String,
}

/// One `<form>` of a page: its action and the name/value pairs a browser would send.
#[derive(Debug, Clone)]
pub struct HtmlForm {
    pub action: String,
    pub fields: Vec<(String, String)>,
    /// (name, value, visible text) of each submit button.
    pub buttons: Vec<(Option<String>, Option<String>, String)>,
}

impl Agent {
    pub fn new(base: &str) -> Self {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Agent { client, base: base.to_string() }
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        }
    }

    pub async fn get(&self, url: &str) -> Response {
        let url = self.absolute(url);
        let r = self.client.get(&url).send().await.expect("GET");
        Self::read(r, url).await
    }

    pub async fn post_form(&self, url: &str, fields: &[(String, String)]) -> Response {
        let url = self.absolute(url);
        let r = self.client.post(&url).form(fields).send().await.expect("POST");
        Self::read(r, url).await
    }

    async fn read(r: reqwest::Response, url: String) -> Response {
        let status = r.status();
        let location = r.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = r.text().await.unwrap_or_default();
        Response { status, location, body, url }
    }

    /// Follows redirects on our own server; stops at the first one that leaves it (the
    /// client's redirect URI) and returns that location, or at a page.
    pub async fn follow(&self, mut response: Response) -> Response {
        for _ in 0..10 {
            match &response.location {
                Some(location) if response.status.is_redirection() => {
                    let next = self.absolute(location);
                    if !next.starts_with(&self.base) {
                        return response;
                    }
                    response = self.get(&next).await;
                }
                _ => return response,
            }
        }
        panic!("redirect loop at {}", response.url);
    }

    /// Submits the form that has a button labelled `button`, with `overrides` set.
    pub async fn submit(&self, page: &Response, button: &str, overrides: &[(&str, &str)]) -> Response {
        let form = forms(&page.body)
            .into_iter()
            .find(|f| f.buttons.iter().any(|(_, _, text)| text == button))
            .unwrap_or_else(|| panic!("no form with a {button:?} button on {}:\n{}", page.url, page.body));
        let mut fields = form.fields.clone();
        for (name, value) in overrides {
            fields.retain(|(n, _)| n != name);
            fields.push((name.to_string(), value.to_string()));
        }
        if let Some((Some(name), value, _)) = form.buttons.iter().find(|(_, _, text)| text == button) {
            fields.push((name.clone(), value.clone().unwrap_or_default()));
        }
        let action = if form.action.is_empty() { page.url.clone() } else { form.action.clone() };
        self.post_form(&action, &fields).await
    }
}

pub fn forms(html: &str) -> Vec<HtmlForm> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<form") {
        let after = &rest[start..];
        let end = after.find("</form>").unwrap_or(after.len());
        let form_html = &after[..end];
        let open_tag = &form_html[..form_html.find('>').unwrap_or(form_html.len())];
        let action = attr(open_tag, "action").unwrap_or_default();
        let mut fields = Vec::new();
        for tag in tags(form_html, "<input") {
            let kind = attr(tag, "type").unwrap_or_else(|| "text".into());
            if let Some(name) = attr(tag, "name")
                && kind != "submit"
            {
                fields.push((name, attr(tag, "value").unwrap_or_default()));
            }
        }
        let mut buttons = Vec::new();
        let mut b = form_html;
        while let Some(i) = b.find("<button") {
            let tail = &b[i..];
            let close = tail.find('>').unwrap_or(tail.len());
            let tag = &tail[..close];
            let text_end = tail.find("</button>").unwrap_or(tail.len());
            let text = decode(tail[close.saturating_add(1).min(text_end)..text_end].trim());
            buttons.push((attr(tag, "name"), attr(tag, "value"), text));
            b = &tail[text_end.min(tail.len())..];
            if b.len() == tail.len() {
                break;
            }
            b = &b[b.len().min(9)..];
        }
        out.push(HtmlForm { action, fields, buttons });
        rest = &after[end.min(after.len())..];
        if rest.len() <= 7 {
            break;
        }
        rest = &rest[7..];
    }
    out
}

fn tags<'a>(html: &'a str, open: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(open) {
        let tail = &rest[i..];
        let close = tail.find('>').unwrap_or(tail.len());
        out.push(&tail[..close]);
        rest = &tail[close..];
    }
    out
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    let end = tag[start..].find('"')? + start;
    Some(decode(&tag[start..end]))
}

/// Undoes the HTML escaping of attribute values and text (askama escapes `&<>"'`).
pub fn decode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(semi) = tail.find(';').filter(|s| *s <= 10) else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let entity = &tail[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ if entity.starts_with("#x") || entity.starts_with("#X") => {
                u32::from_str_radix(&entity[2..], 16).ok().and_then(char::from_u32)
            }
            _ if entity.starts_with('#') => entity[1..].parse::<u32>().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_forms_fields_and_buttons() {
        let html = r#"<form method="post" action="/oauth-provider/authorize"><input type="hidden" name="csrf_token" value="a&amp;b&#47;c"><input type="hidden" name="scope" value="openid email"><button type="submit" name="decision" value="allow">Allow</button><button type="submit" name="decision" value="deny" class="secondary">Deny</button></form>"#;
        let forms = forms(html);
        assert_eq!(forms.len(), 1);
        assert_eq!(forms[0].action, "/oauth-provider/authorize");
        assert_eq!(
            forms[0].fields,
            vec![("csrf_token".into(), "a&b/c".into()), ("scope".into(), "openid email".into())]
        );
        assert_eq!(forms[0].buttons.len(), 2);
        assert_eq!(forms[0].buttons[1], (Some("decision".into()), Some("deny".into()), "Deny".into()));
    }
}
