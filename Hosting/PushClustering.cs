using System.Net;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans.Configuration;
using OrleansPush.Hosting.Clustering;
using StackExchange.Redis;

namespace OrleansPush.Hosting;

/// <summary>
/// How a silo joins its cluster (<c>OrleansPush:Cluster:Clustering</c>): fixed loopback ports, or a membership table
/// in Redis or PostgreSQL (ADO.NET clustering, schema in <c>Clustering/PostgresClustering.sql</c>). The gateway's
/// client side of the same choice lives in the gateway's hosting; both read <see cref="ClusterSettings"/> and
/// <see cref="ClusterEndpoints"/> so that they cannot disagree.
/// </summary>
public static class PushClustering
{
    public static ISiloBuilder UsePushClustering(this ISiloBuilder silo, ClusterSettings cluster, IConfiguration configuration)
    {
        switch (cluster.Clustering)
        {
            case ClusteringProvider.Localhost:
                silo.UseLocalhostClustering(
                    siloPort: cluster.SiloPort,
                    gatewayPort: cluster.GatewayPort,
                    primarySiloEndpoint: new IPEndPoint(IPAddress.Loopback, cluster.PrimarySiloPort ?? cluster.SiloPort),
                    serviceId: cluster.ServiceId,
                    clusterId: cluster.ClusterId);
                return silo;
            case ClusteringProvider.Redis:
                silo.UseEndpointsFromConfiguration(cluster, configuration);
                var redis = ClusterEndpoints.RedisConfiguration(cluster, configuration);
                silo.UseRedisClustering(o => o.ConfigurationOptions = redis);
                return silo;
            case ClusteringProvider.Postgres:
                silo.UseEndpointsFromConfiguration(cluster, configuration);
                var postgres = ClusterEndpoints.PostgresConnectionString(cluster, configuration);
                silo.Services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(new PostgresClusteringStartup(postgres));
                silo.UseAdoNetClustering(o =>
                {
                    o.Invariant = PostgresClusteringSchema.Invariant;
                    o.ConnectionString = postgres;
                });
                return silo;
            default:
                throw new InvalidOperationException($"{ClusterSettings.Section}:Clustering must be Localhost, Redis or Postgres.");
        }
    }

    /// <summary>The gateway's side of the same choice: in the embedded default and in <c>Localhost</c> mode the silos'
    /// client gateway ports on this machine; in <c>Cluster</c> mode the configured membership table (for PostgreSQL,
    /// its schema is applied first by a hosted service that runs ahead of the Orleans client).</summary>
    public static IClientBuilder UsePushClustering(this IClientBuilder client, ClusterSettings cluster, IConfiguration configuration)
    {
        var clustering = cluster.Mode == ClusterMode.Cluster ? cluster.Clustering : ClusteringProvider.Localhost;
        switch (clustering)
        {
            case ClusteringProvider.Redis:
                client.Configure<ClusterOptions>(o => (o.ClusterId, o.ServiceId) = (cluster.ClusterId, cluster.ServiceId));
                client.UseRedisClustering(o => o.ConfigurationOptions = ClusterEndpoints.RedisConfiguration(cluster, configuration));
                break;
            case ClusteringProvider.Postgres:
                var postgres = ClusterEndpoints.PostgresConnectionString(cluster, configuration);
                client.Services.Insert(0, ServiceDescriptor.Singleton<IHostedService>(new PostgresClusteringStartup(postgres)));
                client.Configure<ClusterOptions>(o => (o.ClusterId, o.ServiceId) = (cluster.ClusterId, cluster.ServiceId));
                client.UseAdoNetClustering(o =>
                {
                    o.Invariant = PostgresClusteringSchema.Invariant;
                    o.ConnectionString = postgres;
                });
                break;
            default:
                int[] gatewayPorts = cluster.Mode == ClusterMode.Embedded ? [cluster.GatewayPort] : cluster.GatewayPorts;
                client.UseLocalhostClustering(gatewayPorts, cluster.ServiceId, cluster.ClusterId);
                break;
        }

        return client;
    }

    /// <summary>A membership-table silo: its advertised address, ports and name, and the cluster it belongs to.</summary>
    private static void UseEndpointsFromConfiguration(this ISiloBuilder silo, ClusterSettings cluster, IConfiguration configuration)
    {
        var endpoints = ClusterEndpoints.From(cluster, configuration);
        silo.ConfigureEndpoints(endpoints.AdvertisedIP, cluster.SiloPort, cluster.GatewayPort, endpoints.ListenOnAnyHostAddress);
        if (endpoints.SiloName is { } name)
        {
            silo.Configure<SiloOptions>(o => o.SiloName = name);
        }

        silo.Configure<ClusterOptions>(o =>
        {
            o.ClusterId = cluster.ClusterId;
            o.ServiceId = cluster.ServiceId;
        });
    }
}

/// <summary>Where a silo says it is, resolved from configuration and the pod's downward-API variables.</summary>
public sealed record ClusterEndpoints(IPAddress AdvertisedIP, string? SiloName, bool ListenOnAnyHostAddress)
{
    /// <summary>The pod's IP, set from <c>status.podIP</c> by the Kubernetes manifests.</summary>
    public const string PodIpVariable = "POD_IP";

    /// <summary>The pod's name, set from <c>metadata.name</c> by the Kubernetes manifests.</summary>
    public const string PodNameVariable = "POD_NAME";

    /// <summary><c>AdvertisedIP</c>, else <c>POD_IP</c>, else 127.0.0.1; <c>SiloName</c>, else <c>POD_NAME</c>;
    /// listening on every interface when so configured or when running in a pod.</summary>
    /// <exception cref="InvalidOperationException">The advertised address is not an IP address (the message names
    /// the key).</exception>
    public static ClusterEndpoints From(ClusterSettings cluster, IConfiguration configuration)
    {
        var podIp = configuration[PodIpVariable];
        var text = string.IsNullOrWhiteSpace(cluster.AdvertisedIP) ? podIp : cluster.AdvertisedIP;
        IPAddress? parsed = null;
        if (!string.IsNullOrWhiteSpace(text) && !IPAddress.TryParse(text, out parsed))
        {
            throw new InvalidOperationException(
                $"{ClusterSettings.Section}:AdvertisedIP (or {PodIpVariable}) must be an IP address (is '{text}').");
        }

        var address = parsed ?? IPAddress.Loopback;

        var name = string.IsNullOrWhiteSpace(cluster.SiloName) ? configuration[PodNameVariable] : cluster.SiloName;
        var anyAddress = cluster.ListenOnAnyHostAddress ?? !string.IsNullOrWhiteSpace(podIp);
        return new ClusterEndpoints(address, string.IsNullOrWhiteSpace(name) ? null : name, anyAddress);
    }

    /// <summary>The Redis of the membership table: <c>OrleansPush:Cluster:Redis</c>, else the storage's Redis.</summary>
    public static ConfigurationOptions RedisConfiguration(ClusterSettings cluster, IConfiguration configuration)
    {
        var text = cluster.Redis;
        if (string.IsNullOrWhiteSpace(text))
        {
            text = configuration[StorageOptions.Section + ":Redis"];
        }

        if (string.IsNullOrWhiteSpace(text))
        {
            throw new InvalidOperationException(
                $"{ClusterSettings.Section}:Redis (or {StorageOptions.Section}:Redis) must be set when {ClusterSettings.Section}:Clustering is Redis.");
        }

        var options = ConfigurationOptions.Parse(text);

        // A silo or gateway that starts before Redis is reachable keeps trying instead of failing for good.
        options.AbortOnConnectFail = false;
        return options;
    }

    /// <summary>The PostgreSQL of the membership table: <c>OrleansPush:Cluster:Postgres</c>, else the storage's.</summary>
    public static string PostgresConnectionString(ClusterSettings cluster, IConfiguration configuration)
    {
        var text = string.IsNullOrWhiteSpace(cluster.Postgres) ? configuration[StorageOptions.Section + ":Postgres"] : cluster.Postgres;
        return string.IsNullOrWhiteSpace(text)
            ? throw new InvalidOperationException(
                $"{ClusterSettings.Section}:Postgres (or {StorageOptions.Section}:Postgres) must be set when {ClusterSettings.Section}:Clustering is Postgres.")
            : text;
    }
}
