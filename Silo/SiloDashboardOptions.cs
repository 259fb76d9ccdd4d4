using System.Net;
using Microsoft.Extensions.Options;

namespace OrleansPush.Silo;

/// <summary>The Orleans dashboard on a silo (<c>OrleansPush:Dashboard</c>). Off unless <see cref="Port"/> is set; when
/// it is, the silo also serves HTTP on that port and the dashboard asks for HTTP Basic credentials.</summary>
public sealed class SiloDashboardOptions
{
    public const string Section = "OrleansPush:Dashboard";
    public const string DefaultBindAddress = "127.0.0.1";
    public const int MinimumPasswordLength = 12;
    public const string Realm = "orleanspush-dashboard";
    public const string RoutePrefix = "/dashboard";

    /// <summary>HTTP port of the dashboard and <c>/healthz</c>; 0 (the default) means no HTTP server at all.</summary>
    public int Port { get; set; }

    /// <summary>The address Kestrel listens on: loopback unless set (Kubernetes sets <c>0.0.0.0</c>).</summary>
    public string BindAddress { get; set; } = DefaultBindAddress;

    public string? Username { get; set; }

    public string? Password { get; set; }

    public bool Enabled => Port > 0;
}

internal sealed class SiloDashboardOptionsValidator : IValidateOptions<SiloDashboardOptions>
{
    public ValidateOptionsResult Validate(string? name, SiloDashboardOptions o)
    {
        if (!o.Enabled)
        {
            return ValidateOptionsResult.Success;
        }

        var failures = new List<string>();
        if (o.Port > IPEndPoint.MaxPort)
        {
            failures.Add($"{SiloDashboardOptions.Section}:Port must be between 1 and {IPEndPoint.MaxPort} (is {o.Port}).");
        }

        if (!IPAddress.TryParse(o.BindAddress, out _))
        {
            failures.Add($"{SiloDashboardOptions.Section}:BindAddress must be an IP address such as 127.0.0.1 or 0.0.0.0 (is '{o.BindAddress}').");
        }

        if (string.IsNullOrWhiteSpace(o.Username) || o.Username.Contains(':', StringComparison.Ordinal))
        {
            failures.Add($"{SiloDashboardOptions.Section}:Username must be set, without ':', when {SiloDashboardOptions.Section}:Port is set: the dashboard is never served without authentication.");
        }

        if (string.IsNullOrEmpty(o.Password) || o.Password.Length < SiloDashboardOptions.MinimumPasswordLength)
        {
            failures.Add($"{SiloDashboardOptions.Section}:Password must be set to at least {SiloDashboardOptions.MinimumPasswordLength} characters when {SiloDashboardOptions.Section}:Port is set: the dashboard is never served without authentication.");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
