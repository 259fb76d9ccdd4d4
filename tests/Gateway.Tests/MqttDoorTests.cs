using System.Globalization;
using System.Net;
using System.Net.WebSockets;
using MQTTnet;
using MQTTnet.Exceptions;
using MQTTnet.Formatter;
using Microsoft.Extensions.DependencyInjection;
using OrleansPush.Gateway.Hosting;

namespace OrleansPush.Gateway.Tests;

/// <summary>MQTT passes the same door as every other transport: over TCP and over WebSocket at a custom path, past
/// the connections per IP or per user a CONNECT is refused (and audited), a missing token is refused, a browser origin
/// not on the list is refused, and a draining gateway takes no new client.</summary>
public sealed class MqttDoorTests
{
    private const string CustomPath = "/custom/mq";

    private static async Task<(SecureGateway Gateway, int MqttPort, LogCapture Logs)> StartAsync(Dictionary<string, string?> settings)
    {
        var port = Ports.Free();
        var logs = new LogCapture();
        var gateway = await SecureGateway.StartAsync(logs, TestGateway.Merge(new Dictionary<string, string?>
        {
            ["OrleansPush:Mqtt:Port"] = port.ToString(CultureInfo.InvariantCulture),
            ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
            ["OrleansPush:Mqtt:WebSocketPath"] = CustomPath,
        }, settings));
        return (gateway, port, logs);
    }

    private static MqttClientOptionsBuilder Options(SecureGateway gateway, int port, bool overTcp, string user, string? password = null, string? origin = null)
    {
        var builder = new MqttClientOptionsBuilder()
            .WithClientId("door-" + Guid.NewGuid().ToString("N"))
            .WithProtocolVersion(MqttProtocolVersion.V500)
            .WithCredentials(user, password ?? string.Empty)
            .WithTimeout(TimeSpan.FromSeconds(10));
        return overTcp
            ? builder.WithTcpServer("127.0.0.1", port)
            : builder.WithWebSocketServer(o =>
            {
                o.WithUri($"ws://{gateway.BaseAddress.Authority}{CustomPath}");
                if (origin is not null)
                {
                    o.WithRequestHeaders(new Dictionary<string, string> { ["Origin"] = origin });
                }
            });
    }

    /// <summary>Connects; the CONNACK's result code (or the exception when there was none, e.g. an HTTP refusal).</summary>
    private static async Task<(IMqttClient Client, MqttClientConnectResultCode? Code, Exception? Failure)> ConnectAsync(MqttClientOptionsBuilder options)
    {
        var client = new MqttClientFactory().CreateMqttClient();
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        try
        {
            return (client, (await client.ConnectAsync(options.Build(), cts.Token)).ResultCode, null);
        }
        catch (Exception ex) when (ex is MqttCommunicationException or WebSocketException or OperationCanceledException)
        {
            // MQTTnet 5 returns a refusing CONNACK as the result; it throws only when no CONNACK came (an HTTP refusal,
            // a closed socket), as MqttConnectingFailedException or another MqttCommunicationException depending on
            // where the connection broke, and neither carries a result code.
            return (client, null, ex);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task MqttConnectionsPastTheLimitPerIpAreRefusedAndAudited(bool overTcp)
    {
        var (gateway, port, logs) = await StartAsync(new() { ["OrleansPush:Limits:ConnectionsPerIp"] = "3" });
        await using var _ = gateway;
        var clients = new List<IMqttClient>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                var (client, code, failure) = await ConnectAsync(Options(gateway, port, overTcp, "ip-user-" + i));
                clients.Add(client);
                Assert.True(code == MqttClientConnectResultCode.Success, $"connection {i + 1}: {code} {failure}\n{string.Join('\n', logs.Lines)}");
            }

            var (fourth, refused, _) = await ConnectAsync(Options(gateway, port, overTcp, "ip-user-3"));
            clients.Add(fourth);
            Assert.Equal(MqttClientConnectResultCode.QuotaExceeded, refused);
            Assert.Contains(logs.Lines, l => l.StartsWith("OrleansPush.Audit|2304|", StringComparison.Ordinal) && l.Contains("connections_per_ip", StringComparison.Ordinal)
                && l.Contains("mqtt", StringComparison.Ordinal));

            // A slot comes back when a connection closes.
            await clients[0].DisconnectAsync();
            await WaitUntilAdmittedAsync(() => ConnectAsync(Options(gateway, port, overTcp, "ip-user-4")), clients);
        }
        finally
        {
            clients.ForEach(c => c.Dispose());
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task MqttConnectionsPastTheLimitPerUserAreRefusedWhateverTheTransport(bool overTcp)
    {
        var (gateway, port, logs) = await StartAsync(new() { ["OrleansPush:Limits:ConnectionsPerUser"] = "2" });
        await using var _ = gateway;
        var user = "door-" + Guid.NewGuid().ToString("N")[..8];
        var clients = new List<IMqttClient>();
        try
        {
            var (first, firstCode, firstFailure) = await ConnectAsync(Options(gateway, port, overTcp, user));
            clients.Add(first);
            Assert.True(firstCode == MqttClientConnectResultCode.Success, $"{firstCode} {firstFailure}\n{string.Join('\n', logs.Lines)}");

            // The user's second connection is a raw WebSocket: the limit counts every transport.
            var (status, socket) = await gateway.TryConnectAsync("user=" + user);
            using var ws = socket;
            Assert.Equal(HttpStatusCode.SwitchingProtocols, status);

            var (third, refused, _) = await ConnectAsync(Options(gateway, port, overTcp, user));
            clients.Add(third);
            Assert.Equal(MqttClientConnectResultCode.QuotaExceeded, refused);
            Assert.Contains(logs.Lines, l => l.StartsWith("OrleansPush.Audit|2304|", StringComparison.Ordinal) && l.Contains("connections_per_user", StringComparison.Ordinal)
                && l.Contains(user, StringComparison.Ordinal));

            // Another user is not affected.
            var (other, otherCode, _) = await ConnectAsync(Options(gateway, port, overTcp, user + "-other"));
            clients.Add(other);
            Assert.Equal(MqttClientConnectResultCode.Success, otherCode);
        }
        finally
        {
            clients.ForEach(c => c.Dispose());
        }
    }

    [Fact]
    public async Task MosquittoSubPastTheLimitPerIpIsRefused()
    {
        Assert.True(File.Exists("/usr/bin/mosquitto_sub"), "mosquitto_sub is not installed: apt-get install mosquitto-clients (./test.sh does).");
        var (gateway, port, logs) = await StartAsync(new() { ["OrleansPush:Limits:ConnectionsPerIp"] = "1" });
        await using var _ = gateway;
        var (holder, code, _) = await ConnectAsync(Options(gateway, port, overTcp: true, "mosq-holder"));
        using var __ = holder;
        Assert.Equal(MqttClientConnectResultCode.Success, code);

        var (exitCode, output) = await ChildProcess.RunAsync("mosquitto_sub",
            ["-h", "127.0.0.1", "-p", port.ToString(CultureInfo.InvariantCulture), "-t", "door", "-C", "1", "-W", "10", "-V", "mqttv311", "-i", "mosq-" + Guid.NewGuid().ToString("N")[..12]],
            null, TimeSpan.FromSeconds(20));
        Assert.True(exitCode != 0, $"mosquitto_sub was let in: exit {exitCode}, {output}");
        Assert.Contains(logs.Lines, l => l.StartsWith("OrleansPush.Audit|2304|", StringComparison.Ordinal) && l.Contains("connections_per_ip", StringComparison.Ordinal));
    }

    [Fact]
    public async Task OnACustomWebSocketPathATokenIsRequiredAndAForeignOriginRefused()
    {
        var (gateway, port, logs) = await StartAsync(new()
        {
            ["OrleansPush:Auth:Jwt:SigningKey"] = Convert.ToBase64String(SecurityFixture.Key),
            ["OrleansPush:Auth:Jwt:Issuer"] = SecurityFixture.Issuer,
            ["OrleansPush:Auth:Jwt:Audience"] = SecurityFixture.Audience,
            ["OrleansPush:AllowedOrigins:0"] = SecurityFixture.AllowedOrigin,
        });
        await using var _ = gateway;
        var tokens = new SecurityFixture();
        var user = SecurityFixture.NewUser();

        var (none, noneCode, _) = await ConnectAsync(Options(gateway, port, overTcp: false, user));
        using var ___ = none;
        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, noneCode);
        Assert.Contains(logs.Lines, l => l.StartsWith("OrleansPush.Audit|2300|", StringComparison.Ordinal) && l.Contains("mqtt", StringComparison.Ordinal));

        var (good, goodCode, _) = await ConnectAsync(Options(gateway, port, overTcp: false, user, tokens.Token(user), SecurityFixture.AllowedOrigin));
        using var ____ = good;
        Assert.Equal(MqttClientConnectResultCode.Success, goodCode);

        var (foreign, foreignCode, failure) = await ConnectAsync(Options(gateway, port, overTcp: false, user, tokens.Token(user), "https://evil.example"));
        using var _____ = foreign;
        Assert.True(foreignCode is null && failure is not null, $"a foreign origin got a CONNACK: {foreignCode}");
        Assert.Contains(logs.Lines, l => l.StartsWith("OrleansPush.Audit|2301|", StringComparison.Ordinal) && l.Contains(CustomPath, StringComparison.Ordinal));
    }

    [Fact]
    public async Task ADrainingGatewayRefusesNewMqttClientsOnTcpAndOnACustomPath()
    {
        var (gateway, port, _) = await StartAsync(new() { ["OrleansPush:Gateway:DrainTimeout"] = "00:00:05" });
        await using var _ = gateway;
        var drain = gateway.Services.GetRequiredService<ConnectionDrain>();
        var draining = drain.DrainAsync();
        Assert.True(drain.IsDraining);

        var (tcp, tcpCode, _) = await ConnectAsync(Options(gateway, port, overTcp: true, "drain-tcp"));
        using var __ = tcp;
        Assert.Equal(MqttClientConnectResultCode.ServerUnavailable, tcpCode);

        using var http = new HttpClient();
        using var answer = await http.GetAsync(new Uri(gateway.BaseAddress, CustomPath));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, answer.StatusCode);
        var (ws, wsCode, failure) = await ConnectAsync(Options(gateway, port, overTcp: false, "drain-ws"));
        using var ___ = ws;
        Assert.True(wsCode is null && failure is not null, $"a draining gateway answered CONNECT over WebSocket: {wsCode}");
        await draining.WaitAsync(TimeSpan.FromSeconds(30));
    }

    /// <summary>A freed slot is given back once the gateway has seen the close: retries a bounded number of times.</summary>
    private static async Task WaitUntilAdmittedAsync(Func<Task<(IMqttClient Client, MqttClientConnectResultCode? Code, Exception? Failure)>> connect, List<IMqttClient> clients)
    {
        var deadline = DateTime.UtcNow + WsClient.DefaultWait;
        while (true)
        {
            var (client, code, failure) = await connect();
            clients.Add(client);
            if (code == MqttClientConnectResultCode.Success)
            {
                return;
            }

            Assert.True(DateTime.UtcNow < deadline, $"the slot never came back: {code} {failure}");
            await Task.Delay(100);
        }
    }
}
