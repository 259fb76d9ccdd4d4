using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.AspNetCore.SignalR;
using Microsoft.Extensions.Options;

namespace OrleansPush.Gateway.Security;

/// <summary>Wiring of the security section of the design: tokens, authorization, origins, limits, audit, log
/// redaction.</summary>
public static class SecurityHosting
{
    public static WebApplicationBuilder AddOrleansPushSecurity(this WebApplicationBuilder builder)
    {
        var services = builder.Services;
        var configuration = builder.Configuration;
        services.AddOptions<AuthOptions>().Bind(configuration.GetSection(AuthOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<AuthOptions>, AuthOptionsValidator>();
        services.AddOptions<LimitsOptions>().Bind(configuration.GetSection(LimitsOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<LimitsOptions>, LimitsOptionsValidator>();
        services.AddOptions<OriginOptions>()
            .Configure(o => o.AllowedOrigins = configuration.GetSection(OriginOptions.Key).Get<string[]>() ?? [])
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<OriginOptions>, OriginOptionsValidator>();

        services.AddSingleton<SecurityAudit>();
        services.AddSingleton<ConnectionLimits>();
        services.AddSingleton<TokenValidator>();
        services.AddSingleton<TokenExpiry>();
        services.AddHostedService(sp => sp.GetRequiredService<TokenExpiry>());
        services.AddSingleton<ConnectionSecurity>();
        services.AddSingleton<TokenRevocations>();
        services.AddSingleton<ClusterUserLimit>();
        services.Configure<HubOptions>(o => o.AddFilter<HubMessageLimit>());
        services.AddLogRedaction();

        var auth = configuration.GetSection(AuthOptions.Section).Get<AuthOptions>() ?? new AuthOptions();
        if (auth.Secured)
        {
            services.AddAuthentication(JwtBearerDefaults.AuthenticationScheme).AddJwtBearer();
            services.AddOptions<JwtBearerOptions>(JwtBearerDefaults.AuthenticationScheme)
                .Configure<IOptions<AuthOptions>>((jwt, options) => TokenKeys.Configure(jwt, options.Value));
        }
        else
        {
            // TokenValidator asks for the bearer options even when nothing is validated (open mode answers refreshes
            // without looking at them).
            services.AddOptions<JwtBearerOptions>();
        }

        return builder;
    }

    /// <summary>Authentication (when tokens are required) and the <see cref="ConnectionGate"/>, ahead of the push
    /// endpoints. Says at start whether the gateway is open or which key it checks tokens with.</summary>
    public static WebApplication UseOrleansPushSecurity(this WebApplication app)
    {
        var auth = app.Services.GetRequiredService<IOptions<AuthOptions>>().Value;
        if (auth.Secured)
        {
            var jwt = auth.Jwt;
            SecurityLog.Secured(app.Logger, jwt.SymmetricKeyBytes() is null ? "RS256/ES256 public" : "HS256",
                string.IsNullOrWhiteSpace(jwt.Issuer) ? string.Empty : ", issuer " + jwt.Issuer,
                string.IsNullOrWhiteSpace(jwt.Audience) ? string.Empty : ", audience " + jwt.Audience);
            app.UseAuthentication();
        }
        else
        {
            GatewayLog.RunningOpen(app.Logger);
        }

        app.UseMiddleware<ConnectionGate>();
        return app;
    }
}
