using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Providers;

namespace OrleansPush.Grains;

/// <summary>The silo wiring, shared by the <c>Silo</c> host and the gateway's embedded silo.</summary>
public static class PushSilo
{
    public static ISiloBuilder AddOrleansPushSilo(this ISiloBuilder silo, IConfiguration configuration)
    {
        var cluster = configuration.GetSection(ClusterSettings.Section).Get<ClusterSettings>() ?? new ClusterSettings();
        silo.UseLocalhostClustering(
            siloPort: cluster.SiloPort,
            gatewayPort: cluster.GatewayPort,
            primarySiloEndpoint: new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, cluster.PrimarySiloPort),
            serviceId: cluster.ServiceId,
            clusterId: cluster.ClusterId);
        return silo.AddOrleansPushGrains(configuration);
    }

    /// <summary>Everything but clustering: the stream to gateways, pub-sub storage and the grains' options.</summary>
    public static ISiloBuilder AddOrleansPushGrains(this ISiloBuilder silo, IConfiguration configuration)
    {
        var streams = configuration.GetSection(PushStreamOptions.Section).Get<PushStreamOptions>() ?? new PushStreamOptions();
        silo.AddMemoryGrainStorage(PushNames.PubSubStore);
        silo.AddMemoryStreams<DefaultMemoryMessageBodySerializer>(PushNames.StreamProvider, b =>
        {
            b.ConfigurePartitioning(streams.QueueCount);
            b.ConfigurePullingAgent(o => o.Configure(x => x.GetQueueMsgsTimerPeriod = streams.PollPeriod));
        });

        silo.Services.AddOptions<TopicOptions>().Bind(configuration.GetSection(TopicOptions.Section));
        silo.Services.AddOptions<RoutingOptions>().Bind(configuration.GetSection(RoutingOptions.Section));
        silo.Services.AddSingleton(TimeProvider.System);
        return silo;
    }
}
