using System.Net;
using Microsoft.Extensions.Options;

namespace OrleansPush.Gateway.Transports.Mqtt;

/// <summary>MQTT (<c>OrleansPush:Mqtt</c>): MQTT 3.1.1 and 5 over TCP on <see cref="Port"/> and over WebSocket at
/// <see cref="WebSocketPath"/>.</summary>
public sealed class MqttOptions
{
    public const string Section = "OrleansPush:Mqtt";
    public const int DefaultPort = 1883;
    public const string DefaultBindAddress = "0.0.0.0";
    public const string DefaultWebSocketPath = "/mqtt";
    public const int DefaultMaxResumableSessions = 100_000;
    public static readonly TimeSpan DefaultSessionResumeWindow = TimeSpan.FromMinutes(10);

    /// <summary>TCP port of MQTT; 0 turns MQTT over TCP off (MQTT over WebSocket stays on).</summary>
    public int Port { get; set; } = DefaultPort;

    /// <summary>The address the TCP listener binds (an IPv4 or IPv6 address).</summary>
    public string BindAddress { get; set; } = DefaultBindAddress;

    /// <summary>Whether MQTT over WebSocket is served at <see cref="WebSocketPath"/>.</summary>
    public bool WebSockets { get; set; } = true;

    public string WebSocketPath { get; set; } = DefaultWebSocketPath;

    /// <summary>How long after a client with a persistent session (clean session off) went away a reconnect with the
    /// same client id and user finds its session: its subscriptions, each topic from the last message it acknowledged.</summary>
    public TimeSpan SessionResumeWindow { get; set; } = DefaultSessionResumeWindow;

    /// <summary>Most disconnected sessions whose positions are kept for resuming.</summary>
    public int MaxResumableSessions { get; set; } = DefaultMaxResumableSessions;

    internal IPAddress ParsedBindAddress => IPAddress.Parse(BindAddress);
}

internal sealed class MqttOptionsValidator : IValidateOptions<MqttOptions>
{
    public ValidateOptionsResult Validate(string? name, MqttOptions o)
    {
        var failures = new List<string>();
        if (o.Port is < 0 or > 65535)
        {
            failures.Add($"{MqttOptions.Section}:Port must be between 0 (off) and 65535 (is {o.Port}).");
        }

        if (!IPAddress.TryParse(o.BindAddress, out _))
        {
            failures.Add($"{MqttOptions.Section}:BindAddress must be an IP address (is '{o.BindAddress}').");
        }

        if (o.WebSockets && (string.IsNullOrEmpty(o.WebSocketPath) || o.WebSocketPath[0] != '/'))
        {
            failures.Add($"{MqttOptions.Section}:WebSocketPath must start with '/' (is '{o.WebSocketPath}').");
        }

        if (o.SessionResumeWindow < TimeSpan.Zero || o.SessionResumeWindow > TimeSpan.FromDays(7))
        {
            failures.Add($"{MqttOptions.Section}:SessionResumeWindow must be between 00:00:00 and 7.00:00:00 (is {o.SessionResumeWindow}).");
        }

        if (o.MaxResumableSessions < 0)
        {
            failures.Add($"{MqttOptions.Section}:MaxResumableSessions must be 0 or more (is {o.MaxResumableSessions}).");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
