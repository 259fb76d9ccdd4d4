using OrleansPush.Grains;

namespace OrleansPush.Gateway.Hosting;

/// <summary>
/// The embedded default: a silo in the gateway's process, started before the gateway joins it as a client. It is a
/// host of its own because an Orleans client cannot consume streams from inside a silo; this way the gateway runs the
/// same client code embedded as in a cluster. This is the only place the gateway touches grain implementations.
/// </summary>
public sealed class EmbeddedSilo : IAsyncDisposable
{
    private readonly IHost _host;

    private const string StrongGrainDirectoryKey = ClusterSettings.Section + ":StrongGrainDirectory";

    private EmbeddedSilo(IHost host) => _host = host;

    /// <summary>The silo's own services (its history store, its grain catalog), for tests and diagnostics.</summary>
    public IServiceProvider Services => _host.Services;

    public static async Task<EmbeddedSilo> StartAsync(IConfiguration configuration, CancellationToken cancellationToken = default)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddConfiguration(configuration);
        if (configuration[StrongGrainDirectoryKey] is null)
        {
            // One silo: Orleans' local directory is the only one, as consistent as the distributed one, and keeps less
            // after a burst of grains (the distributed one's calls leave cancellation registrations and pooled
            // completions behind that grew with the hours of the churn benchmark, issue 16). Set the key to have it anyway.
            builder.Configuration.AddInMemoryCollection([new(StrongGrainDirectoryKey, "false")]);
        }

        builder.Logging.AddConfiguration(configuration.GetSection("Logging"));
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
        builder.UseOrleans(silo => silo.AddOrleansPushSilo(builder.Configuration));
        var host = builder.Build();
        await host.StartAsync(cancellationToken);
        return new EmbeddedSilo(host);
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await _host.StopAsync(TimeSpan.FromSeconds(10));
        }
        finally
        {
            _host.Dispose();
        }
    }
}
