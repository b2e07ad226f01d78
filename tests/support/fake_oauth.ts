// Stand-ins for six platforms' OAuth 2.0 servers and APIs on 127.0.0.1, one
// server per platform, for end-to-end tests of social-connect and the
// post-to-platform step. Each speaks its platform's documented wire format:
// the same paths (the function replaces only scheme and host, through
// OAUTH_<PLATFORM>_BASE_URL), parameters, client authentication and error
// bodies:
//
//   instagram  GET /oauth/authorize; POST /oauth/access_token (form, client_id +
//              client_secret; answers {"data":[{access_token,user_id,permissions}]},
//              errors {error_type, code, error_message}); GET /access_token
//              (ig_exchange_token) and GET /refresh_access_token (ig_refresh_token) on
//              the graph host; GET /v21.0/me?access_token=; Graph errors
//              {error:{message,type,code,fbtrace_id}}
//   twitter    GET /i/oauth2/authorize (PKCE S256 required); POST /2/oauth2/token
//              with HTTP Basic client auth, code_verifier checked, refresh tokens
//              single-use and rotated; POST /2/oauth2/revoke; GET /2/users/me;
//              POST /2/tweets; errors {error, error_description}
//   linkedin   GET /oauth/v2/authorization; POST /oauth/v2/accessToken (form client
//              credentials); GET /v2/userinfo; POST /rest/posts (201 + x-restli-id);
//              POST /oauth/v2/revoke
//   tiktok     GET /v2/auth/authorize/ (client_key); POST /v2/oauth/token/ (errors
//              answered with HTTP 200 and an error field, as TikTok does);
//              GET /v2/user/info/; POST /v2/oauth/revoke/
//   google     GET /o/oauth2/v2/auth (access_type=offline); POST /token (a refresh
//              answer carries no refresh_token); GET /v1/userinfo; POST /revoke
//   facebook   GET /v21.0/dialog/oauth; GET /v21.0/oauth/access_token (code, or
//              grant_type=fb_exchange_token); GET /v21.0/me; DELETE /v21.0/me/permissions
//
// Test controls on every server:
//   GET  /__requests -> every request received (method, path, query, form, auth header kind)
//   POST /__config   -> {expires_in?, refresh_delay_ms?, refresh_error?: "invalid_grant"}
//   POST /__script   -> [{path, status}] answers used once each, in order, for that path
//   POST /__reset    -> forget requests, scripts, config
//   GET  /__posts    -> posts accepted (twitter, linkedin)

type Platform = "instagram" | "twitter" | "linkedin" | "tiktok" | "google" | "facebook";

export const PLATFORMS: Platform[] = ["instagram", "twitter", "linkedin", "tiktok", "google", "facebook"];

export interface FakeOAuth {
  platform: Platform;
  url: string;
  clientId: string;
  clientSecret: string;
  close(): Promise<void>;
}

interface Recorded {
  method: string;
  path: string;
  query: Record<string, string>;
  form: Record<string, string>;
  auth: string | null;
  at: number;
}

const rand = () => crypto.randomUUID().replaceAll("-", "");

async function sha256b64url(s: string): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));
  return btoa(String.fromCharCode(...d)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

/** Starts the fake of one platform on a free port. */
export function startFakeOAuth(platform: Platform, clientId: string, clientSecret: string): FakeOAuth {
  const requests: Recorded[] = [];
  const posts: unknown[] = [];
  let config: { expires_in?: number; refresh_delay_ms?: number; refresh_error?: string } = {};
  let scripts: { path: string; status: number }[] = [];
  // code -> {redirect_uri, challenge}
  const codes = new Map<string, { redirect: string; challenge?: string; used: boolean }>();
  const access = new Set<string>();
  const refresh = new Set<string>();
  const accountId = platform === "instagram" ? "17841400000001" : `${platform}-user-1`;

  const err = (status: number, code: string, message: string): Response => {
    switch (platform) {
      case "instagram":
        return json(status, { error_type: "OAuthException", code: status, error_message: message });
      case "facebook":
        return json(status, {
          error: { message, type: "OAuthException", code: code === "invalid_token" ? 190 : 100, fbtrace_id: rand() },
        });
      case "tiktok":
        return json(200, { error: code, error_description: message, log_id: rand() });
      default:
        return json(status, { error: code, error_description: message });
    }
  };
  const graphErr = (message: string) =>
    json(400, { error: { message, type: "OAuthException", code: 190, fbtrace_id: rand() } });

  const issue = (withRefresh: boolean, long = false) => {
    const a = `at-${platform}-${rand()}`;
    access.add(a);
    const body: Record<string, unknown> = {
      access_token: a,
      token_type: platform === "tiktok" || platform === "google" ? "Bearer" : "bearer",
      expires_in: long ? 5183944 : (config.expires_in ?? 7200),
    };
    if (withRefresh) {
      const r = `rt-${platform}-${rand()}`;
      refresh.add(r);
      body.refresh_token = r;
    }
    if (platform === "tiktok") {
      Object.assign(body, { open_id: accountId, scope: "user.info.basic,video.publish", refresh_expires_in: 31536000 });
    }
    if (platform === "google" || platform === "twitter" || platform === "linkedin") body.scope = "openid profile";
    return body;
  };

  const bearer = (req: Request, q: URLSearchParams) => {
    const h = req.headers.get("authorization") ?? "";
    return h.startsWith("Bearer ") ? h.slice(7) : q.get("access_token") ?? "";
  };

  const clientOk = (req: Request, f: URLSearchParams) => {
    if (platform === "twitter") {
      return req.headers.get("authorization") === `Basic ${btoa(`${clientId}:${clientSecret}`)}`;
    }
    const id = platform === "tiktok" ? f.get("client_key") : f.get("client_id");
    return id === clientId && f.get("client_secret") === clientSecret;
  };

  const exchangeCode = async (f: URLSearchParams): Promise<Response | null> => {
    const c = codes.get(f.get("code") ?? "");
    if (!c || c.used) return err(400, "invalid_grant", "Invalid authorization code");
    if (f.get("redirect_uri") !== c.redirect) return err(400, "invalid_grant", "redirect_uri does not match");
    if (c.challenge) {
      const v = f.get("code_verifier") ?? "";
      if ((await sha256b64url(v)) !== c.challenge) {
        return err(400, "invalid_request", "Value passed for the code_verifier was invalid.");
      }
    }
    c.used = true;
    return null;
  };

  const handler = async (req: Request): Promise<Response> => {
    const u = new URL(req.url);
    const q = u.searchParams;
    const text = req.method === "GET" || req.method === "DELETE" ? "" : await req.text();
    const f = new URLSearchParams(req.headers.get("content-type")?.includes("form") ? text : "");
    const p = u.pathname;
    if (p === "/__requests") return json(200, requests);
    if (p === "/__posts") return json(200, posts);
    if (p === "/__reset") {
      requests.length = 0;
      posts.length = 0;
      scripts = [];
      config = {};
      return json(200, {});
    }
    if (p === "/__config") {
      config = JSON.parse(text || "{}");
      return json(200, config);
    }
    if (p === "/__script") {
      const s = JSON.parse(text || "[]");
      scripts.push(...(Array.isArray(s) ? s : [s]));
      return json(200, {});
    }
    const auth = req.headers.get("authorization");
    requests.push({
      method: req.method,
      path: p,
      query: Object.fromEntries(q),
      form: Object.fromEntries(f),
      auth: auth ? auth.split(" ")[0] : null,
      at: Date.now(),
    });
    const scripted = scripts.findIndex((s) => s.path === p);
    if (scripted >= 0) {
      const s = scripts.splice(scripted, 1)[0];
      return err(s.status, s.status >= 500 ? "server_error" : "invalid_request", `scripted ${s.status}`);
    }

    // Authorisation: answers the redirect a consenting user would cause.
    const authorizePaths: Record<Platform, string> = {
      instagram: "/oauth/authorize",
      twitter: "/i/oauth2/authorize",
      linkedin: "/oauth/v2/authorization",
      tiktok: "/v2/auth/authorize/",
      google: "/o/oauth2/v2/auth",
      facebook: "/v21.0/dialog/oauth",
    };
    if (p === authorizePaths[platform] && req.method === "GET") {
      const id = platform === "tiktok" ? q.get("client_key") : q.get("client_id");
      if (id !== clientId || q.get("response_type") !== "code" || !q.get("redirect_uri") || !q.get("state")) {
        return err(400, "invalid_request", "missing or wrong client_id, response_type, redirect_uri or state");
      }
      if (platform === "twitter" && (q.get("code_challenge_method") !== "S256" || !q.get("code_challenge"))) {
        return err(400, "invalid_request", "PKCE is required");
      }
      const code = `code-${rand()}`;
      codes.set(code, {
        redirect: q.get("redirect_uri")!,
        challenge: q.get("code_challenge") ?? undefined,
        used: false,
      });
      const to = new URL(q.get("redirect_uri")!);
      to.searchParams.set("code", code);
      to.searchParams.set("state", q.get("state")!);
      return new Response(null, { status: 302, headers: { location: to.toString() } });
    }

    const refreshGrant = async (): Promise<Response> => {
      if (config.refresh_delay_ms) await new Promise((r) => setTimeout(r, config.refresh_delay_ms));
      if (config.refresh_error) return err(400, config.refresh_error, "Token has been expired or revoked.");
      const r = f.get("refresh_token") ?? "";
      if (!refresh.has(r)) return err(400, "invalid_grant", "Value passed for the token was invalid.");
      const rotates = platform === "twitter" || platform === "tiktok";
      if (rotates) refresh.delete(r);
      const body = issue(rotates);
      if (platform === "linkedin") body.refresh_token = r;
      return json(200, body);
    };

    switch (`${platform} ${req.method} ${p}`) {
      // Instagram API with Instagram Login
      case "instagram POST /oauth/access_token": {
        if (!clientOk(req, f)) return err(400, "invalid_client", "Invalid client_secret");
        const e = await exchangeCode(f);
        if (e) return e;
        const t = issue(false);
        return json(200, {
          data: [{
            access_token: t.access_token,
            user_id: Number(accountId),
            permissions: "instagram_business_basic,instagram_business_content_publish",
          }],
        });
      }
      case "instagram GET /access_token": {
        if (
          q.get("grant_type") !== "ig_exchange_token" || q.get("client_secret") !== clientSecret ||
          !access.has(q.get("access_token") ?? "")
        ) {
          return graphErr("Invalid OAuth access token - Cannot parse access token");
        }
        return json(200, issue(false, true));
      }
      case "instagram GET /refresh_access_token": {
        if (config.refresh_delay_ms) await new Promise((r) => setTimeout(r, config.refresh_delay_ms));
        if (
          q.get("grant_type") !== "ig_refresh_token" || !access.has(q.get("access_token") ?? "") || config.refresh_error
        ) {
          return graphErr("Error validating access token: Session has expired");
        }
        return json(200, issue(false, true));
      }
      case "instagram GET /v21.0/me":
        if (!access.has(bearer(req, q))) return graphErr("Invalid OAuth access token.");
        return json(200, { user_id: accountId, username: "insta_tester", name: "Insta Tester", id: "1" });

      // Twitter / X
      case "twitter POST /2/oauth2/token":
        if (!clientOk(req, f)) return err(401, "unauthorized_client", "Missing valid authorization header");
        if (f.get("grant_type") === "refresh_token") return await refreshGrant();
        {
          const e = await exchangeCode(f);
          if (e) return e;
        }
        return json(200, issue(true));
      case "twitter POST /2/oauth2/revoke":
        if (!clientOk(req, f)) return err(401, "unauthorized_client", "Missing valid authorization header");
        access.delete(f.get("token") ?? "");
        return json(200, { revoked: true });
      case "twitter GET /2/users/me":
        if (!access.has(bearer(req, q))) {
          return json(401, { title: "Unauthorized", type: "about:blank", status: 401, detail: "Unauthorized" });
        }
        return json(200, { data: { id: "2244994945", name: "Test Tester", username: "tester" } });
      case "twitter POST /2/tweets": {
        if (!access.has(bearer(req, q))) {
          return json(401, { title: "Unauthorized", type: "about:blank", status: 401, detail: "Unauthorized" });
        }
        const body = JSON.parse(text || "{}");
        const id = String(1800000000000000000n + BigInt(posts.length + 1));
        posts.push({ id, text: body.text });
        return json(201, { data: { id, text: body.text, edit_history_tweet_ids: [id] } });
      }

      // LinkedIn
      case "linkedin POST /oauth/v2/accessToken":
        if (!clientOk(req, f)) return err(401, "invalid_client", "Client authentication failed");
        if (f.get("grant_type") === "refresh_token") return await refreshGrant();
        {
          const e = await exchangeCode(f);
          if (e) return e;
        }
        return json(200, { ...issue(true), refresh_token_expires_in: 31536000 });
      case "linkedin GET /v2/userinfo":
        if (!access.has(bearer(req, q))) {
          return json(401, { serviceErrorCode: 65600, message: "Invalid access token", status: 401 });
        }
        return json(200, {
          sub: "li-sub-1",
          name: "Linked Tester",
          given_name: "Linked",
          family_name: "Tester",
          email: "li@test.local",
          email_verified: true,
        });
      case "linkedin POST /rest/posts": {
        if (!access.has(bearer(req, q))) {
          return json(401, { serviceErrorCode: 65600, message: "Invalid access token", status: 401 });
        }
        if (!req.headers.get("linkedin-version")) {
          return json(426, { status: 426, message: "A version header is required" });
        }
        const id = `urn:li:share:${7000000000000000000n + BigInt(posts.length + 1)}`;
        posts.push({ id, text: JSON.parse(text || "{}").commentary });
        return new Response(null, { status: 201, headers: { "x-restli-id": id } });
      }
      case "linkedin POST /oauth/v2/revoke":
        if (!clientOk(req, f)) return err(401, "invalid_client", "Client authentication failed");
        access.delete(f.get("token") ?? "");
        return new Response(null, { status: 200 });

      // TikTok
      case "tiktok POST /v2/oauth/token/":
        if (!clientOk(req, f)) return err(400, "invalid_client", "Client key or secret is incorrect.");
        if (f.get("grant_type") === "refresh_token") return await refreshGrant();
        {
          const e = await exchangeCode(f);
          if (e) return e;
        }
        return json(200, issue(true));
      case "tiktok GET /v2/user/info/":
        if (!access.has(bearer(req, q))) {
          return json(401, {
            data: {},
            error: {
              code: "access_token_invalid",
              message: "The access token is invalid or not found in the request.",
              log_id: rand(),
            },
          });
        }
        return json(200, {
          data: {
            user: {
              open_id: accountId,
              union_id: "u-1",
              display_name: "Tik Tester",
              avatar_url: "https://example.test/a.png",
            },
          },
          error: { code: "ok", message: "", log_id: rand() },
        });
      case "tiktok POST /v2/oauth/revoke/":
        access.delete(f.get("token") ?? "");
        return json(200, {});

      // Google
      case "google POST /token":
        if (!clientOk(req, f)) return err(401, "invalid_client", "The OAuth client was not found.");
        if (f.get("grant_type") === "refresh_token") return await refreshGrant();
        {
          const e = await exchangeCode(f);
          if (e) return e;
        }
        return json(200, { ...issue(true), id_token: "header.payload.signature" });
      case "google GET /v1/userinfo":
        if (!access.has(bearer(req, q))) {
          return json(401, { error: "invalid_token", error_description: "Invalid Credentials" });
        }
        return json(200, {
          sub: "1098765432101234567",
          name: "Goo Tester",
          email: "goo@test.local",
          picture: "https://example.test/g.png",
        });
      case "google POST /revoke":
        access.delete(f.get("token") ?? "");
        return json(200, {});

      // Facebook Login
      case "facebook GET /v21.0/oauth/access_token": {
        if (q.get("client_id") !== clientId || q.get("client_secret") !== clientSecret) {
          return err(400, "invalid_client", "Error validating client secret.");
        }
        if (q.get("grant_type") === "fb_exchange_token") {
          if (!access.has(q.get("fb_exchange_token") ?? "")) {
            return err(400, "invalid_token", "Invalid OAuth access token.");
          }
          return json(200, issue(false, true));
        }
        const e = await exchangeCode(q);
        if (e) return e;
        return json(200, issue(false));
      }
      case "facebook GET /v21.0/me":
        if (!access.has(bearer(req, q))) return err(400, "invalid_token", "Invalid OAuth access token.");
        return json(200, {
          id: "10150000000000001",
          name: "Face Tester",
          picture: { data: { url: "https://example.test/f.png" } },
        });
      case "facebook DELETE /v21.0/me/permissions":
        access.delete(q.get("access_token") ?? "");
        return json(200, { success: true });
    }
    return err(404, "not_found", `no route ${req.method} ${p}`);
  };

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler);
  return {
    platform,
    url: `http://127.0.0.1:${server.addr.port}`,
    clientId,
    clientSecret,
    close: () => server.shutdown(),
  };
}
