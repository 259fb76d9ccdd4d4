using Microsoft.Extensions.Logging;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using System.Net.Http.Json;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using OrleansPush.Gateway.Hosting;

namespace OrleansPush.Gateway.Tests;

/// <summary>A real gateway on Kestrel, bound to 127.0.0.1 on a free port: embedded (its own silo) or a client of a
/// silo started by <see cref="TestSilo"/>.</summary>
public sealed class TestGateway : IAsyncDisposable
{
    private readonly GatewayHost _host;

    private TestGateway(GatewayHost host, Uri baseAddress)
    {
        _host = host;
        BaseAddress = baseAddress;
        Http = new HttpClient { BaseAddress = baseAddress, Timeout = TimeSpan.FromSeconds(30) };
    }

    public Uri BaseAddress { get; }

    public HttpClient Http { get; }

    public IServiceProvider Services => _host.App.Services;

    /// <summary>The embedded silo's services (null for a gateway that is a client of other silos).</summary>
    public IServiceProvider? SiloServices => _host.Silo?.Services;

    public Uri WebSocketUri(string? query = null) =>
        new($"ws://{BaseAddress.Authority}/ws{(query is null ? string.Empty : "?" + query)}");

    /// <summary>Starts an embedded gateway (gateway and silo in one process).</summary>
    /// <param name="services">Registers test seams (fault filters) before the gateway's own wiring.</param>
    public static Task<TestGateway> StartEmbeddedAsync(IDictionary<string, string?>? settings = null, Action<IServiceCollection>? services = null,
        ILoggerProvider? logs = null)
    {
        return StartAsync(Merge(EmbeddedSettings(), settings), services, logs);
    }

    /// <summary>An embedded gateway's own silo on free loopback ports (its own silo is the primary by default).</summary>
    internal static Dictionary<string, string?> EmbeddedSettings() => new()
    {
        ["OrleansPush:Cluster:Mode"] = "Embedded",
        ["OrleansPush:Cluster:SiloPort"] = Ports.Free().ToString(),
        ["OrleansPush:Cluster:GatewayPort"] = Ports.Free().ToString(),
    };

    /// <summary>Starts a gateway that joins the silo(s) of <paramref name="silo"/> as a client.</summary>
    public static Task<TestGateway> StartClientAsync(TestSilo silo, IDictionary<string, string?>? settings = null) =>
        StartAsync(Merge(new Dictionary<string, string?>
        {
            ["OrleansPush:Cluster:Mode"] = "Localhost",
            ["OrleansPush:Cluster:GatewayPorts:0"] = silo.GatewayPort.ToString(),
        }, settings));

    /// <summary>Starts a gateway with exactly these settings (on top of the test defaults).</summary>
    public static Task<TestGateway> StartCustomAsync(Dictionary<string, string?> settings, Action<IServiceCollection>? services = null) => StartAsync(settings, services);

    /// <summary>Starts a gateway with these settings, retrying for up to a minute while its cluster is still coming up.</summary>
    public static async Task<TestGateway> StartWhenClusterIsUpAsync(Dictionary<string, string?> settings)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            try
            {
                return await StartCustomAsync(settings);
            }
            catch (Exception) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(1000);
            }
        }
    }

    private static async Task<TestGateway> StartAsync(Dictionary<string, string?> settings, Action<IServiceCollection>? services = null,
        ILoggerProvider? logs = null)
    {
        var (host, address) = await StartHostAsync(Merge(TestSettings.Common(), settings), logs: logs, services: services);
        return new TestGateway(host, address);
    }

    /// <summary>Builds and starts a gateway on real Kestrel with exactly <paramref name="settings"/>; with
    /// <paramref name="logs"/>, that provider is added before the gateway's own logging wiring runs. Returns the host
    /// and the address Kestrel bound.</summary>
    internal static async Task<(GatewayHost Host, Uri Address)> StartHostAsync(
        IDictionary<string, string?> settings, string? url = "http://127.0.0.1:0", ILoggerProvider? logs = null, Action<IServiceCollection>? services = null)
    {
        var host = await GatewayHost.CreateAsync([], builder =>
        {
            builder.Configuration.AddInMemoryCollection(settings);
            services?.Invoke(builder.Services);
            if (url is not null)
            {
                builder.WebHost.UseUrls(url);
            }

            if (logs is not null)
            {
                builder.Logging.AddProvider(logs);
            }
        });
        try
        {
            await host.App.StartAsync();
        }
        catch
        {
            await host.DisposeAsync();
            throw;
        }

        var address = host.App.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return (host, new Uri(address));
    }

    public async Task<PublishAnswer> PublishAsync(string topic, string json)
    {
        using var content = new StringContent(json, System.Text.Encoding.UTF8, "application/json");
        using var response = await Http.PostAsync("/api/topics/" + topic, content);
        Assert.True(response.IsSuccessStatusCode, $"publish to {topic} answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
        return (await response.Content.ReadFromJsonAsync<PublishAnswer>())!;
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        using (var stop = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
        {
            await _host.App.StopAsync(stop.Token);
        }

        await _host.DisposeAsync();
    }

    internal static Dictionary<string, string?> Merge(IDictionary<string, string?> a, IDictionary<string, string?>? b)
    {
        var all = new Dictionary<string, string?>(a);
        foreach (var (k, v) in b ?? new Dictionary<string, string?>())
        {
            all[k] = v;
        }

        return all;
    }
}

public sealed record PublishAnswer(string Topic, string Epoch, long Seq);

/// <summary>A silo on its own (the gateway-less half of a cluster), on free loopback ports.</summary>
public sealed class TestSilo : IAsyncDisposable
{
    private readonly EmbeddedSilo _silo;

    private TestSilo(EmbeddedSilo silo, int gatewayPort)
    {
        _silo = silo;
        GatewayPort = gatewayPort;
    }

    public int GatewayPort { get; }

    public static async Task<TestSilo> StartAsync(IDictionary<string, string?>? settings = null)
    {
        var siloPort = Ports.Free();
        var gatewayPort = Ports.Free();
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(TestGateway.Merge(TestSettings.Common(), TestGateway.Merge(new Dictionary<string, string?>
        {
            ["OrleansPush:Cluster:SiloPort"] = siloPort.ToString(),
            ["OrleansPush:Cluster:GatewayPort"] = gatewayPort.ToString(),
            ["OrleansPush:Cluster:PrimarySiloPort"] = siloPort.ToString(),
        }, settings))).Build();
        return new TestSilo(await EmbeddedSilo.StartAsync(configuration), gatewayPort);
    }

    public ValueTask DisposeAsync() => _silo.DisposeAsync();
}

internal static class TestSettings
{
    public static Dictionary<string, string?> Common() => new()
    {
        ["Logging:LogLevel:Default"] = "Warning",
        ["Logging:LogLevel:Orleans"] = "Error",
        ["Logging:LogLevel:Polly"] = "Error",
        ["OrleansPush:Topics:Namespaces:chat:ClientPublish"] = "true",
        ["OrleansPush:Mqtt:Port"] = "0", // MQTT over TCP only where a test asks for it, on a free loopback port
    };
}

/// <summary>See <see cref="Cluster.Tests.Ports"/>: ports outside the kernel's ephemeral range.</summary>
internal static class Ports
{
    public static int Free() => Cluster.Tests.Ports.Free();
}
