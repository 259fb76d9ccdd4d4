using System.Security.Claims;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace OrleansPush.Gateway.Security;

/// <summary>The signing key and validation rules of <see cref="AuthOptions"/>, applied to ASP.NET Core's JWT bearer
/// handler (connects and API calls) and to <see cref="TokenValidator"/> (in-band refreshes): both use the same
/// parameters, so a token good for one is good for the other.</summary>
internal static class TokenKeys
{
    public const string FailureItem = "OrleansPush.TokenFailure";

    public static AsymmetricAlgorithm LoadPublicKey(string file)
    {
        var pem = File.ReadAllText(file);
        if (pem.Contains("EC PUBLIC KEY", StringComparison.Ordinal) || pem.Contains("EC PRIVATE KEY", StringComparison.Ordinal))
        {
            var ec = ECDsa.Create();
            ec.ImportFromPem(pem);
            return ec;
        }

        // A "PUBLIC KEY" (SubjectPublicKeyInfo) block may hold either kind: try RSA, then EC.
        var rsa = RSA.Create();
        try
        {
            rsa.ImportFromPem(pem);
            return rsa;
        }
        catch (CryptographicException)
        {
            rsa.Dispose();
            var ec = ECDsa.Create();
            ec.ImportFromPem(pem);
            return ec;
        }
    }

    public static void Configure(JwtBearerOptions jwt, AuthOptions auth)
    {
        var options = auth.Jwt;
        SecurityKey key;
        string[] algorithms;
        if (options.SymmetricKeyBytes() is { } bytes)
        {
            key = new SymmetricSecurityKey(bytes);
            algorithms = [SecurityAlgorithms.HmacSha256];
        }
        else
        {
            var loaded = LoadPublicKey(options.PublicKeyFile!);
            key = loaded is RSA rsa ? new RsaSecurityKey(rsa) : new ECDsaSecurityKey((ECDsa)loaded);
            algorithms = loaded is RSA ? [SecurityAlgorithms.RsaSha256] : [SecurityAlgorithms.EcdsaSha256];
        }

        // Keep claim names as they are in the token (sub, topics, publish), not mapped to WS-* URIs.
        jwt.MapInboundClaims = false;
        jwt.SaveToken = false;
        jwt.IncludeErrorDetails = false;
        jwt.TokenValidationParameters = new TokenValidationParameters
        {
            IssuerSigningKey = key,
            ValidAlgorithms = algorithms,
            ValidateIssuerSigningKey = true,
            ValidateIssuer = !string.IsNullOrWhiteSpace(options.Issuer),
            ValidIssuer = options.Issuer,
            ValidateAudience = !string.IsNullOrWhiteSpace(options.Audience),
            ValidAudience = options.Audience,
            ValidateLifetime = true,
            RequireExpirationTime = true,
            ClockSkew = options.ClockSkew,
            NameClaimType = ConnectionAccess.SubjectClaim,
        };
        jwt.Events = new JwtBearerEvents
        {
            OnMessageReceived = context =>
            {
                var request = context.Request;
                if (string.IsNullOrEmpty(context.Token) && !request.Headers.ContainsKey("Authorization")
                    && IsQueryTokenPath(context.HttpContext) && request.Query.TryGetValue("access_token", out var token))
                {
                    context.Token = token.ToString();
                }

                return Task.CompletedTask;
            },
            OnAuthenticationFailed = context =>
            {
                // Only the reason is kept (and audited by whoever refuses the request); never the token.
                context.HttpContext.Items[FailureItem] = Reason(context.Exception);
                return Task.CompletedTask;
            },
        };
    }

    /// <summary>The push paths, whose clients cannot always set headers (browsers' WebSocket and EventSource): there
    /// the token may come as <c>?access_token=</c>. The publish API takes the header only.</summary>
    public static bool IsQueryTokenPath(HttpContext context) =>
        context.RequestServices.GetRequiredService<Connections.PushEndpoints>().Find(context.Request.Path) is not null;

    /// <summary>A short, token-free reason for a refused token.</summary>
    public static string Reason(Exception? exception) => exception switch
    {
        SecurityTokenExpiredException => "expired",
        SecurityTokenNotYetValidException => "not_yet_valid",
        SecurityTokenInvalidAudienceException => "wrong_audience",
        SecurityTokenInvalidIssuerException => "wrong_issuer",
        SecurityTokenNoExpirationException => "no_expiry",
        SecurityTokenInvalidSignatureException or SecurityTokenSignatureKeyNotFoundException => "bad_signature",
        SecurityTokenInvalidAlgorithmException => "bad_algorithm",
        SecurityTokenMalformedException or ArgumentException => TokenReasons.Malformed,
        _ => "invalid",
    };
}

/// <summary>Why a token was refused, as the audit trail and the client's message give it (besides
/// <see cref="TokenKeys.Reason"/>'s validation failures).</summary>
public static class TokenReasons
{
    /// <summary>No token was sent.</summary>
    public const string Missing = "missing";

    /// <summary>What was sent is not a JWT at all (e.g. an MQTT password that is the application's own credential).</summary>
    public const string Malformed = "malformed";

    /// <summary>The token was issued (<c>iat</c>) before its user's tokens were revoked.</summary>
    public const string Revoked = "revoked";
}

/// <summary>Validates a token outside a request (the raw protocol's <c>refresh</c>), with exactly the parameters the
/// bearer handler uses.</summary>
public sealed class TokenValidator(IOptionsMonitor<JwtBearerOptions> jwt)
{
    /// <summary>The token's rights, or null with a reason (<c>expired</c>, <c>bad_signature</c>, ...).</summary>
    public async Task<(ConnectionAccess? Access, string Reason)> ValidateAsync(string? token)
    {
        if (string.IsNullOrWhiteSpace(token) || token.Length > 16 * 1024)
        {
            return (null, TokenReasons.Missing);
        }

        var options = jwt.Get(JwtBearerDefaults.AuthenticationScheme);
        var handler = options.TokenHandlers.OfType<JsonWebTokenHandler>().FirstOrDefault() ?? new JsonWebTokenHandler { MapInboundClaims = false };
        var result = await handler.ValidateTokenAsync(token, options.TokenValidationParameters);
        if (!result.IsValid)
        {
            return (null, TokenKeys.Reason(result.Exception));
        }

        return (ConnectionAccess.FromPrincipal(new ClaimsPrincipal(result.ClaimsIdentity)), string.Empty);
    }
}
