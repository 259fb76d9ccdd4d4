using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Npgsql;
using Orleans.Storage;
using OrleansPush.Grains.History;
using OrleansPush.Grains.Outbox;
using OrleansPush.Grains.Webhooks;
using OrleansPush.Hosting;
using OrleansPush.Hosting.Webhooks;
using StackExchange.Redis;

namespace OrleansPush.Grains;

/// <summary>The silo wiring, shared by the <c>Silo</c> host and the gateway's embedded silo.</summary>
public static class PushSilo
{
    /// <summary>How long a stopping silo has to hand its grains over and leave the membership table
    /// (<c>HostOptions.ShutdownTimeout</c> of the <c>Silo</c> host); a pod's grace period must exceed it.</summary>
    public static readonly TimeSpan ShutdownTimeout = TimeSpan.FromSeconds(25);

    public static ISiloBuilder AddOrleansPushSilo(this ISiloBuilder silo, IConfiguration configuration)
    {
        var cluster = SharedOptions.ReadCluster(configuration);
        silo.UsePushClustering(cluster, configuration);
        silo.Services.Configure<Orleans.Configuration.SiloMessagingOptions>(o => o.ResponseTimeout = cluster.ResponseTimeout);
        if (cluster.StrongGrainDirectory)
        {
            // The default directory of every grain type, topic grains first among them: registration is linearizable,
            // so a grain has at most one activation also while membership changes (the eventually consistent default
            // allows a short-lived duplicate then). It is experimental in Orleans 10 (ORLEANSEXP003); Orleans' own test
            // clusters use it by default. See ClusterSettings.GrainDirectoryLease for what it costs when a silo dies.
#pragma warning disable ORLEANSEXP003
            silo.AddDistributedGrainDirectory();
#pragma warning restore ORLEANSEXP003
            silo.Services.Configure<Orleans.Configuration.GrainDirectoryOptions>(o => o.RangeLeaseDuration = cluster.GrainDirectoryLease);
        }

        return silo.AddOrleansPushGrains(configuration);
    }

    /// <summary>Everything but clustering: the stream to gateways, pub-sub storage and the grains' options.</summary>
    public static ISiloBuilder AddOrleansPushGrains(this ISiloBuilder silo, IConfiguration configuration)
    {
        var streams = SharedOptions.ReadStreams(configuration);
        silo.AddMemoryGrainStorage(PushNames.PubSubStore);
        silo.AddPushStreams(streams, SharedOptions.ReadCluster(configuration).ResponseTimeout);

        silo.AddHistoryAndState(configuration);
        silo.Services.AddHistoryEncryption(configuration);

        // Failure detection (probe timeouts, missed probes): how fast a dead silo's grains move elsewhere.
        silo.Services.Configure<Orleans.Configuration.ClusterMembershipOptions>(configuration.GetSection(ClusterSettings.Section + ":Membership"));
        silo.Services.AddSharedOptions(configuration);
        silo.Services.AddSingleton<WebhookHttp>();
        if (configuration.GetSection(WebhookOptions.Section + ":Endpoints").GetChildren().Any())
        {
            silo.Services.AddHostedService<WebhookWaker>();
        }
        silo.Services.AddSingleton(TimeProvider.System);
        silo.Services.AddIdleMemoryTrim();
        silo.CollectIdleGrains(configuration);
        return silo;
    }

    /// <summary>Topic and user grains without calls for <see cref="GrainLifetimeOptions.IdleGrainTimeout"/> deactivate, so
    /// that memory follows the topics and users that are alive; their cached locations are bounded by count and age
    /// (<see cref="GrainLifetimeOptions.LocationCacheSize"/>, <see cref="GrainLifetimeOptions.LocationCacheTtl"/>).</summary>
    private static void CollectIdleGrains(this ISiloBuilder silo, IConfiguration configuration)
    {
        var lease = configuration.GetSection(RoutingOptions.Section).Get<RoutingOptions>()?.Lease ?? RoutingOptions.DefaultLease;
        var lifetimes = SharedOptions.Read(configuration, GrainLifetimeOptions.Section, new GrainLifetimeOptionsValidator(lease));
        var idle = lifetimes.IdleGrainTimeout;
        silo.Services.Configure<Orleans.Configuration.GrainDirectoryOptions>(o =>
        {
            o.CacheSize = lifetimes.LocationCacheSize;
            o.MaximumCacheTTL = lifetimes.LocationCacheTtl;
        });
        silo.Services.Configure<Orleans.Configuration.GrainCollectionOptions>(o =>
        {
            foreach (var grain in new[] { typeof(TopicGrain), typeof(UserGrain) })
            {
                o.ClassSpecificCollectionAge[grain.FullName!] = idle;
            }

            if (o.CollectionQuantum > idle / 2)
            {
                o.CollectionQuantum = idle / 2;
            }
        });
    }

    /// <summary>The history store and grain storage named <see cref="PushNames.StateStore"/>, on the configured
    /// provider (<c>OrleansPush:Storage:Provider</c>).</summary>
    private static void AddHistoryAndState(this ISiloBuilder silo, IConfiguration configuration)
    {
        var storage = SharedOptions.ReadStorage(configuration);
        var outbox = SharedOptions.Read(configuration, OutboxOptions.Section, new OutboxOptionsValidator(storage.Provider));
        switch (storage.Provider)
        {
            case StorageProvider.Memory:
                silo.Services.AddSingleton<IHistoryStore, MemoryHistoryStore>();
                silo.AddMemoryGrainStorage(PushNames.StateStore);
                break;
            case StorageProvider.Redis:
                var redis = Required(storage.Redis, "Redis");
                silo.Services.AddSingleton<IConnectionMultiplexer>(_ => ConnectionMultiplexer.Connect(RedisConfiguration(redis)));
                silo.Services.AddSingleton<IHistoryStore>(sp => new RedisHistoryStore(sp.GetRequiredService<IConnectionMultiplexer>(), storage.Prefix));
                silo.AddRedisGrainStorage(PushNames.StateStore, (Orleans.Persistence.RedisStorageOptions o) => o.ConfigurationOptions = RedisConfiguration(redis));
                break;
            case StorageProvider.Postgres:
                var postgres = Required(storage.Postgres, "Postgres");
                silo.Services.AddSingleton(_ => NpgsqlDataSource.Create(postgres));
                silo.Services.AddSingleton<IHistoryStore>(sp => new PostgresHistoryStore(sp.GetRequiredService<NpgsqlDataSource>(), storage.Prefix));
                silo.Services.AddKeyedSingleton<IGrainStorage>(PushNames.StateStore,
                    (sp, _) => new PostgresGrainStorage(sp.GetRequiredService<NpgsqlDataSource>(), storage.Prefix, sp.GetRequiredService<IGrainStorageSerializer>()));
                if (outbox.Enabled)
                {
                    silo.Services.AddHostedService(sp => new OutboxConsumer(postgres, storage.Prefix, outbox,
                        sp.GetRequiredService<IGrainFactory>(), sp.GetRequiredService<ILogger<OutboxConsumer>>()));
                }

                break;
            default:
                throw new InvalidOperationException($"{StorageOptions.Section}:Provider must be Memory, Redis or Postgres.");
        }
    }

    private static ConfigurationOptions RedisConfiguration(string redis)
    {
        var options = ConfigurationOptions.Parse(redis);
        options.AbortOnConnectFail = false;
        return options;
    }

    private static string Required(string? value, string key) =>
        string.IsNullOrWhiteSpace(value)
            ? throw new InvalidOperationException($"{StorageOptions.Section}:{key} must be set when {StorageOptions.Section}:Provider is {key}.")
            : value;
}
